// Drives Xen Orchestra's Xen-API connector (npm `xen-api`) against a pyxapi server.
//
// Usage: node xo_connector.mjs URL USER PASSWORD
// Reads one JSON command per line on stdin, answers one JSON line on stdout:
//   {"op":"connect"}                          -> {"types": {type: count}, "pool": ref}
//   {"op":"wait","ref","field","value","timeout"} -> {"value": v} once the cached object has it
//   {"op":"callAsync","method","args"}        -> {"result": r} or {"error": {"code","params"}}
//   {"op":"barrier"}                          -> {"ok": true}
//   {"op":"quit"}
import { createInterface } from 'node:readline'
import { createClient } from 'xen-api'

const [url, user, password] = process.argv.slice(2)
const xapi = createClient({ url, auth: { user, password }, allowUnauthorized: true })

const reply = obj => process.stdout.write(JSON.stringify(obj) + '\n')

function byRef(ref) {
  return Object.values(xapi.objects.all).find(o => o.$ref === ref)
}

// resolves when the cached copy of `ref` has `field` equal to `value` (kept up by event.from)
function waitFor(ref, field, value, timeout) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const o = byRef(ref)
      if (o !== undefined && o[field] === value) {
        xapi.objects.removeListener('update', check)
        xapi.objects.removeListener('add', check)
        clearTimeout(timer)
        resolve(o[field])
      }
    }
    const timer = setTimeout(() => {
      xapi.objects.removeListener('update', check)
      xapi.objects.removeListener('add', check)
      reject(new Error(`timeout: ${ref}.${field} is ${JSON.stringify(byRef(ref)?.[field])}`))
    }, timeout * 1e3)
    xapi.objects.on('update', check)
    xapi.objects.on('add', check)
    check()
  })
}

const handlers = {
  async connect() {
    await xapi.connect()
    await xapi.objectsFetched
    const types = {}
    for (const o of Object.values(xapi.objects.all)) {
      types[o.$type] = (types[o.$type] ?? 0) + 1
    }
    return { types, pool: xapi.pool.$ref }
  },
  async wait({ ref, field, value, timeout = 20 }) {
    return { value: await waitFor(ref, field, value, timeout) }
  },
  async callAsync({ method, args = [] }) {
    try {
      return { result: await xapi.callAsync(method, ...args) }
    } catch (error) {
      return { error: { code: error.code, params: error.params, message: String(error) } }
    }
  },
  async barrier() {
    await xapi.barrier()
    return { ok: true }
  },
}

const rl = createInterface({ input: process.stdin })
for await (const line of rl) {
  const cmd = JSON.parse(line)
  if (cmd.op === 'quit') {
    break
  }
  try {
    reply(await handlers[cmd.op](cmd))
  } catch (error) {
    reply({ failed: String(error?.stack ?? error) })
  }
}
await xapi.disconnect()
process.exit(0)
