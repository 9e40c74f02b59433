"""Hypothesis strategies for audit events: optional text fields and JSON details.

Shared by tests/unit/audit/test_record.py (the field-by-field encoding is canonical JSON)
and tests/unit/audit/test_prefigure.py (a filled template is the event encoded afterwards).
"""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["json_values", "optional_text"]

optional_text = st.none() | st.text(max_size=12)
"""An event's optional text field: absent, empty or a short string."""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
"""Any JSON value a detail may hold (no NaN or infinity: the ledger refuses those)."""
