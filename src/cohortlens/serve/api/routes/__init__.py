"""One router module per area of the API (the FastAPI full-stack template's ``api/routes``).

Path parameters that carry ids use the ``{name:anything}`` convertor registered here: like
Starlette's ``path`` it matches a percent-encoded ``/`` once decoded, and unlike it also any
control character (``.`` in a regular expression stops at a newline).
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class _Anything(Convertor[str]):
    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _Anything())
