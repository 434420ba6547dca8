"""Tracebacks group by their exception types and frames, whether they come as one
multi-line record or one record per line."""

from __future__ import annotations

from healthmon.grouping import Grouper, TracebackAssembler, parse_traceback, traceback_fingerprint


def python_traceback(
    prefix: str = "/srv/app",
    line: int = 42,
    message: str = "unsupported operand type(s) for +: 'int' and 'NoneType'",
    error: str = "TypeError",
    function: str = "total",
) -> str:
    return "\n".join(
        [
            "Traceback (most recent call last):",
            f'  File "{prefix}/.venv/lib/python3.12/site-packages/django/core/handlers/base.py",'
            " line 197, in _get_response",
            "    response = wrapped_callback(request, *callback_args, **callback_kwargs)",
            f'  File "{prefix}/shop/views.py", line {line}, in checkout',
            "    total = order.total()",
            f'  File "{prefix}/shop/models.py", line {line * 2}, in {function}',
            "    return sum(line.price for line in self.lines)",
            f"{error}: {message}",
        ]
    )


def java_traceback(
    order: int = 1234,
    line: int = 57,
    address: str = "0x0000000800c0b048",
    cause: str = "java.sql.SQLException",
) -> str:
    return "\n".join(
        [
            f'Exception in thread "main" java.lang.IllegalStateException: Order {order} closed',
            f"\tat com.acme.shop.Order.pay(Order.java:{line})",
            f"\tat com.acme.shop.Checkout$$Lambda$14/{address}.apply(Unknown Source)",
            f"\tat com.acme.shop.Checkout.run(Checkout.java:{line + 10})",
            f"Caused by: {cause}: connection reset by peer {order}",
            "\tat com.acme.db.Pool.get(Pool.java:101)",
            "\t... 3 more",
        ]
    )


def test_a_python_traceback_is_parsed_into_its_exception_and_frames() -> None:
    traceback = parse_traceback(python_traceback())
    assert traceback is not None
    assert traceback.language == "Python"
    assert traceback.exceptions == ("TypeError",)
    assert traceback.frames == (
        "django/core/handlers/base.py in _get_response",
        "app/shop/views.py in checkout",
        "app/shop/models.py in total",
    )


def test_python_tracebacks_group_without_line_numbers_messages_or_install_paths() -> None:
    one = traceback_fingerprint(python_traceback())
    other = traceback_fingerprint(
        python_traceback(prefix="/home/deploy/srv/app", line=50, message="other text")
    )
    assert one is not None
    assert one == other
    assert "TypeError" in one.template


def test_python_tracebacks_differ_by_exception_type_or_frame() -> None:
    base = traceback_fingerprint(python_traceback())
    assert base is not None
    assert traceback_fingerprint(python_traceback(error="ValueError")) != base
    assert traceback_fingerprint(python_traceback(function="subtotal")) != base


def test_a_chained_python_traceback_keeps_every_exception() -> None:
    chained = "\n".join(
        [
            python_traceback(error="KeyError", message="'sku'"),
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            python_traceback(error="RuntimeError", message="checkout failed"),
        ]
    )
    traceback = parse_traceback(chained)
    assert traceback is not None
    assert traceback.exceptions == ("KeyError", "RuntimeError")
    assert len(traceback.frames) == 6


def test_java_tracebacks_group_by_exceptions_and_frames_without_numbers_or_addresses() -> None:
    traceback = parse_traceback(java_traceback())
    assert traceback is not None
    assert traceback.language == "Java"
    assert traceback.exceptions == ("java.lang.IllegalStateException", "java.sql.SQLException")
    assert traceback.frames[0] == "com.acme.shop.Order.pay"
    assert traceback.frames[1] == "com.acme.shop.Checkout$$Lambda$<*>/<*>.apply"
    same = traceback_fingerprint(java_traceback(order=99, line=80, address="0x00000008001a2b3c"))
    assert traceback_fingerprint(java_traceback()) == same
    assert traceback_fingerprint(java_traceback(cause="java.io.IOException")) != same


def test_a_message_without_a_traceback_has_no_traceback_fingerprint() -> None:
    assert traceback_fingerprint("Connection reset by peer") is None
    assert traceback_fingerprint("line one\nline two") is None
    assert parse_traceback("Traceback (most recent call last):\n  nothing raised") is None


def test_the_grouper_fingerprints_a_traceback_by_its_shape_and_learns_nothing() -> None:
    grouper = Grouper()
    one = grouper.fingerprint(python_traceback())
    other = grouper.fingerprint(python_traceback(line=7, message="different"))
    assert one == other == traceback_fingerprint(python_traceback())
    assert grouper.templates() == []
    assert grouper.fingerprint(java_traceback()) != one


def assemble(records: list[str]) -> list[tuple[int, str]]:
    assembler: TracebackAssembler[int] = TracebackAssembler()
    done: list[tuple[int, str]] = []
    for number, record in enumerate(records):
        done += assembler.feed(number, record)
    return done + assembler.flush()


def test_the_assembler_joins_a_python_traceback_logged_one_line_per_record() -> None:
    traceback = python_traceback()
    records = ["request started", *traceback.splitlines(), "request finished"]
    assert assemble(records) == [
        (0, "request started"),
        (1, traceback),
        (len(records) - 1, "request finished"),
    ]


def test_the_assembler_joins_a_chained_python_traceback() -> None:
    first, second = python_traceback(error="KeyError"), python_traceback(error="RuntimeError")
    records = [
        *first.splitlines(),
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        *second.splitlines(),
        "next",
    ]
    (whole, _), (after, _) = assembled = assemble(records)
    assert (whole, after) == (0, len(records) - 1)
    traceback = parse_traceback(assembled[0][1])
    assert traceback is not None
    assert traceback.exceptions == ("KeyError", "RuntimeError")


def test_the_assembler_joins_a_java_traceback_logged_one_line_per_record() -> None:
    traceback = java_traceback()
    records = ["GET /pay 500", *traceback.splitlines(), "GET /health 200"]
    assembled = assemble(records)
    assert assembled == [(0, "GET /pay 500"), (1, traceback), (len(records) - 1, "GET /health 200")]
    assert traceback_fingerprint(assembled[1][1]) == traceback_fingerprint(traceback)


def test_the_assembler_passes_ordinary_records_through_one_by_one() -> None:
    records = ["one", "  indented but not a traceback", "two"]
    assert assemble(records) == list(enumerate(records))
    assembler: TracebackAssembler[str] = TracebackAssembler()
    assert assembler.flush() == []
