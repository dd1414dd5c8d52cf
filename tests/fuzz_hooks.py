"""Schemathesis hooks for the fuzz run (tests/test_fuzz_api.py loads this file).

Three rules compare one field of a request with another, or with what the store holds, which a
JSON Schema cannot state: an arm's `valid_until` after its `valid_from` (service/decision/arms.py),
quiet hours that end at another minute than they start (service/api/schemas.py `QuietHoursIn`),
an outcome's `timestamp` not before its decision (service/decision/engine.py). A schema-valid
request that breaks one of them is refused (400, naming the field), and the fuzzer reports that
as "schema-valid request rejected". Exactly those refusals are accepted here, by the field and
the reason the problem names; any other refusal of schema-valid data still fails the run. The
rules themselves are tested in tests/test_api_contract.py and tests/test_api_errors.py."""
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
    if failure.code != "ST202" or response.status_code != 400:
        return True
    try:
        errors = json.loads(response.content)["errors"]
    except (ValueError, KeyError, TypeError):
        return True
    return not errors or not all((e.get("field"), e.get("reason")) in CROSS_FIELD for e in errors)
