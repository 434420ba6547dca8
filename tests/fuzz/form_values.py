"""What a fuzzer types into a form field or a query string: plain text, text with NUL
and other control characters, numbers far out of any range, special floats, dates
that are not dates, and the empty string."""

from __future__ import annotations

from hypothesis import strategies as st

HOSTILE_NUMBERS = st.sampled_from(
    ["1e20", "1e30", "1e100", "-1", "-1e30", "NaN", "nan", "Infinity", "-inf", "0", "1.5", "9" * 40]
)
HOSTILE_TEXT = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "<script>alert(1)</script>", "'; DROP TABLE x; --", "%", "\u202e"]
)
DATES = st.sampled_from(["2026-02-30", "0000-00-00", "9999-12-31 99:99", "yesterday"])

form_value = st.one_of(
    HOSTILE_NUMBERS,
    HOSTILE_TEXT,
    DATES,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=300),
)

query_strings = st.dictionaries(
    st.sampled_from(["q", "o", "p", "page", "e", "all", "status", "service", "fragment", "id__in"])
    | st.text(min_size=1, max_size=12),
    form_value,
    max_size=4,
)
