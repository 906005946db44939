"""The one way a call fails: ApiError(code, *params) → ErrorDescription [code, params…]."""
from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: str, *params):
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__(code, *self.params)

    @property
    def description(self) -> list[str]:
        return [self.code, *self.params]

    def __str__(self):
        return " ".join(self.description)
