"""Loaded by scripts/schemathesis.sh (SCHEMATHESIS_HOOKS).

Hypothesis describes the lambdas in its strategies by parsing their module's source with
`ast.parse`. On CPython 3.11 before 3.11.8 that parse can raise `SystemError: AST constructor
recursion depth mismatch` (CPython gh-106905) when it happens deep in a stack, and the
test case then errors. The description is only a label: fall back to Hypothesis' own
"unknown" label instead of failing the run.
"""

import hypothesis.internal.lambda_sources as lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description


import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    """An order's or hold's lines and a bulk put's items name each sku once (`lines.sku: ...
    appears twice` is 400): a rule the document states in words, since JSON Schema cannot
    say "unique by a key". Generated bodies, and stateful steps that merge a link's lines
    into generated ones, can repeat a sku; the later entries are dropped before the call, so
    what is sent is a request the document allows."""
    body = case.body
    if not isinstance(body, dict):
        return
    for name in ("lines", "items"):
        entries = body.get(name)
        if not isinstance(entries, list):
            continue
        seen, kept = set(), []
        for entry in entries:
            sku = entry.get("sku") if isinstance(entry, dict) else None
            if isinstance(sku, str):
                if sku in seen:
                    continue
                seen.add(sku)
            kept.append(entry)
        body[name] = kept
