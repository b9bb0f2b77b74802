"""Container image references (`spec.serving.image`, `spec.build.image`) as the container runtime parses them.

The grammar is that of the distribution project's reference package, github.com/distribution/reference,
regexp.go (formerly docker/distribution/reference; read at commit 00a09fa3799203fc887e667b0d82142ee831939a):

    reference      := name [ ":" tag ] [ "@" digest ]
    name           := [ domain "/" ] path-component [ "/" path-component ]*
    domain         := host [ ":" port-number ]
    host           := domain-name | "[" IPv6 "]"
    domain-name    := domain-component [ "." domain-component ]*
    domain-component := /[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]/
    path-component := alpha-numeric [ separator alpha-numeric ]*
    alpha-numeric  := /[a-z0-9]+/
    separator      := /[._]|__|[-]+/
    tag            := /[\\w][\\w.-]{0,127}/
    digest         := algorithm ":" hex, algorithm /[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*/,
                      hex /[0-9a-fA-F]{32,}/

PATTERN is that grammar as one anchored regular expression. It is the `pattern` of both fields, so
pydantic checks it in the operator and the CRD carries it as its OpenAPI pattern: the apiserver refuses
`"my image:1"` with the field's path instead of a Deployment whose pods never pull. Written so the
three engines that read it agree: Go's RE2 (the apiserver), Rust's regex (pydantic) and Python's re
(the tests): `\\w` is spelled [A-Za-z0-9_] (Unicode-aware in Rust and Python, ASCII in Go) and
[[:xdigit:]] is spelled [0-9a-fA-F] (Python has no POSIX classes).
"""

from __future__ import annotations

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

PATTERN = rf"^{_NAME}(?::{_TAG})?(?:@{_DIGEST})?$"
