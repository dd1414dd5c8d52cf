"""Schemathesis hooks for the fuzz run (tests/test_fuzz_api.py loads this file).

Three rules compare one field of a request with another, or with what the store holds, which a
JSON Schema cannot state: an arm's `valid_until` after its `valid_from` (service/decision/arms.py),
quiet hours that end at another minute than they start (service/api/schemas.py `QuietHoursIn`),
an outcome's `timestamp` not before its decision (service/decision/engine.py). A schema-valid
request that breaks one of them is refused (400, naming the field), and the fuzzer reports that
as "schema-valid request rejected". Exactly those refusals are accepted here, by the field and
the reason the problem names; any other refusal of schema-valid data still fails the run. The
rules themselves are tested in tests/test_api_contract.py and tests/test_api_errors.py.

A batch decide of more than 1,000 requests breaks the document's `maxItems` and is refused with
the 413 the document gives for it (naming `requests`), not with one of the statuses the fuzzer
counts as a refusal ("schema-violating request accepted"): exactly that refusal is accepted too.
And a batch with an invalid request is answered 200 by design, that request's problem (a 400
problem document) in its place: a 200 whose `decisions` hold such a problem is accepted as the
refusal of the invalid request (tests/test_batch.py tests both)."""
from __future__ import annotations

import json

import schemathesis

CROSS_FIELD = {
    ("valid_until", "valid_until must be after valid_from"),
    ("quiet_hours.end", "must differ from start: quiet hours would be empty"),
    # with --clock request, an outcome may carry its own time, which a decision logged earlier bounds
    ("timestamp", "the outcome's timestamp is before its decision was made"),
}


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    if failure.code == "ST201" and response.status_code in (200, 413):
        try:
            body = json.loads(response.content)
        except ValueError:
            return True
        if response.status_code == 413:
            return body.get("field") != "requests"
        refused = [d for d in body.get("decisions", []) if isinstance(d, dict) and d.get("status") == 400]
        return not refused
    if failure.code != "ST202" or response.status_code != 400:
        return True
    try:
        errors = json.loads(response.content)["errors"]
    except (ValueError, KeyError, TypeError):
        return True
    return not errors or not all((e.get("field"), e.get("reason")) in CROSS_FIELD for e in errors)
