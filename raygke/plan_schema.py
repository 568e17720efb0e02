"""The plan document's identity, shared by its writer (raygke/plan.py, `raygke plan --format json`) and
its reader (raygke/diff.py, `raygke plan --base`).

Owns: the document's `kind` and `schema_version`. Imports nothing, so the diff stays free of pulumi.
"""

PLAN_KIND = "raygke-plan"
# The shape of plan_document; bump on any change to a field a reader uses (`raygke plan --base`
# refuses versions it does not know). A new field is not one: readers ignore fields they do not read,
# and a bump would make every diff across it fail.
PLAN_SCHEMA_VERSION = 1
