"""`routing.providers.embeddings.read_answer`: an embeddings answer read with each
vector kept as its text, held to the full reading (`json.loads` with `JsonText`
numbers, what every other answer gets) for any text, valid or not."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from controlplane.money import JsonText, dumps_exact
from routing.providers.embeddings import VectorText, read_answer


def full_reading(text: bytes) -> Any:
    return json.loads(text, parse_float=JsonText, parse_constant=str)


def as_fully_read(value: Any) -> Any:
    """`read_answer`'s reading with each vector read as the full reading reads it."""
    if isinstance(value, VectorText):
        return full_reading(value.encode())
    if isinstance(value, dict):
        return {key: as_fully_read(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_fully_read(item) for item in value]
    return value


numbers = (
    st.integers(-(10**20), 10**20).map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.decimals(allow_nan=False, allow_infinity=False).map(str)
    | st.sampled_from(["1e5", "-0.5E-3", "0", "-0", "1E+2"])
)
vectors = st.lists(numbers, max_size=8).map(lambda texts: json.loads(f"[{','.join(texts)}]"))
scalars = st.none() | st.booleans() | st.text(max_size=6) | numbers.map(json.loads)
odd_vectors = st.lists(scalars | st.lists(scalars, max_size=2), min_size=1, max_size=4)
items = st.builds(
    lambda known, other: {**other, **known},
    st.fixed_dictionaries(
        {"embedding": vectors | odd_vectors | st.text(max_size=8)},
        optional={"object": st.just("embedding"), "index": st.integers(0, 3)},
    ),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)
answers = st.fixed_dictionaries(
    {"data": st.lists(items | scalars, max_size=3)},
    optional={
        "object": st.just("list"),
        "model": st.text(max_size=10),
        "usage": st.fixed_dictionaries({"prompt_tokens": st.integers(0, 99), "cost": scalars}),
        "e\\mbedding": vectors,
    },
)
layouts = st.sampled_from(
    [
        {"separators": (",", ":")},
        {},  # json.dumps's default: ", " and ": "
        {"indent": 2},  # as OpenAI writes its answers
        {"indent": "\t", "separators": (" ,", " : ")},
    ]
)


@given(answer=answers, layout=layouts, ensure_ascii=st.booleans())
@settings(max_examples=300)
def test_an_answer_reads_as_the_full_reading_reads_it(
    answer: dict[str, Any], layout: dict[str, Any], ensure_ascii: bool
) -> None:
    text = json.dumps(answer, ensure_ascii=ensure_ascii, **layout).encode()

    read = read_answer(text)

    if read is not None:  # else the full reading is used
        assert as_fully_read(read) == full_reading(text)
        for item in read["data"]:
            vector = item.get("embedding") if isinstance(item, dict) else None
            if isinstance(vector, VectorText):
                assert set(map(type, full_reading(vector.encode()))) <= {JsonText, int}
                assert not any(space in vector for space in " \t\n\r")


@given(answer=answers, layout=layouts, at=st.integers(0, 10**6), junk=st.sampled_from('[]{},:" x1'))
@example(answer={"data": []}, layout={}, at=0, junk="x")
def test_a_text_that_is_not_json_is_never_read(
    answer: dict[str, Any], layout: dict[str, Any], at: int, junk: str
) -> None:
    text = json.dumps(answer, **layout)
    at %= len(text) + 1
    mangled = (text[:at] + junk + text[at:]).encode()
    try:
        expected = full_reading(mangled)
    except ValueError:
        assert read_answer(mangled) is None
    else:
        read = read_answer(mangled)
        assert read is None or as_fully_read(read) == expected


def test_openai_s_answer_keeps_its_vector_as_written_without_its_whitespace() -> None:
    text = (
        b'{\n  "object": "list",\n  "data": [\n    {\n      "object": "embedding",\n'
        b'      "index": 0,\n      "embedding": [\n        -0.006929283,\n'
        b"        1.2345678901234567890e-05,\n        7\n      ]\n    }\n  ],\n"
        b'  "model": "text-embedding-3-small",\n'
        b'  "usage": {\n    "prompt_tokens": 5,\n    "total_tokens": 5\n  }\n}\n'
    )

    read = read_answer(text)

    assert read is not None
    vector = read["data"][0]["embedding"]
    assert type(vector) is VectorText
    assert vector == "[-0.006929283,1.2345678901234567890e-05,7]"
    assert read["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert dumps_exact(read["data"][0]) == (
        '{"object":"embedding","index":0,"embedding":[-0.006929283,1.2345678901234567890e-05,7]}'
    )


def test_a_vector_of_anything_but_numbers_is_read_number_by_number() -> None:
    read = read_answer(b'{"data": [{"embedding": [1, true]}, {"embedding": [NaN, 0.5]}]}')

    assert read == {"data": [{"embedding": [1, True]}, {"embedding": ["NaN", "0.5"]}]}
    assert Decimal(read["data"][1]["embedding"][1]) == Decimal("0.5")


def test_a_vector_past_what_a_double_holds_is_kept_as_written() -> None:
    read = read_answer(b'{"data": [{"embedding": [1e400, -0.5]}, {"embedding": [1.,2]}]}')

    assert read is None  # `1.` is not JSON: the full reading refuses the answer
    read = read_answer(b'{"data": [{"embedding": [1e400, -0.5, 123456789012345678901234]}]}')

    assert read is not None
    assert dumps_exact(read) == '{"data":[{"embedding":[1e400,-0.5,123456789012345678901234]}]}'
