from __future__ import annotations

import re

import pytest

from contracts.durations import parse_duration
from contracts.errors import ExpressionError
from contracts.evaluation_bounds import MAX_ITEMS, MAX_WORK
from contracts.expressions import Expression, Template, render_value

NAMES = {
    "params": {"n": 3, "name": "x"},
    "tasks": {
        "a": {"state": "succeeded", "outputs": {"result": [1, 2, 3]}},
        "b-c": {"state": "failed"},
    },
    "item": {"id": 7},
}


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("params.n * 2", 6),
        ("tasks.a.state == 'succeeded' and len(tasks.a.outputs.result) == 3", True),
        ("[x * params.n for x in tasks.a.outputs.result if x > 1]", [6, 9]),
        ("tasks['b-c'].state", "failed"),
        ("item['id'] if item else None", 7),
        ("sum(tasks.a.outputs.result) / len(tasks.a.outputs.result)", 2.0),
        ("from_json('[1, 2]')", [1, 2]),
        ("to_json({'b': 1, 'a': 2})", '{"a":2,"b":1}'),
    ],
)
def test_evaluates(source: str, value: object) -> None:
    assert Expression(source).evaluate(NAMES) == value


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("params.__class__", "private attribute"),
        ("(lambda: 1)()", "only the built-in functions"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("params.n +", "invalid syntax"),
        ("", "empty expression"),
    ],
)
def test_rejects_unsafe_or_malformed(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        Expression(source)
    assert message in info.value.message


def test_runtime_errors_are_expression_errors() -> None:
    with pytest.raises(ExpressionError, match=r"params\.missing"):
        Expression("params.missing").evaluate(NAMES)
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        Expression("params.n / 0").evaluate(NAMES)


def test_sequences_up_to_a_million_items_and_no_more() -> None:
    assert len(Expression("[i for i in range(100_000)]").evaluate(NAMES)) == 100_000
    assert len(Expression("list(range(MAX))").evaluate({"MAX": MAX_ITEMS})) == MAX_ITEMS
    with pytest.raises(ExpressionError, match="range of 1,000,001 numbers"):
        Expression("list(range(n))").evaluate({"n": MAX_ITEMS + 1})
    with pytest.raises(ExpressionError, match="range of"):
        Expression("[i for i in range(10 ** 12)]").evaluate(NAMES)


def test_a_bare_name_is_looked_up_and_a_missing_one_is_an_error() -> None:
    assert Expression("item").evaluate(NAMES) == {"id": 7}
    with pytest.raises(ExpressionError, match="nope"):
        Expression("nope").evaluate(NAMES)


def test_references_are_extracted_statically() -> None:
    refs = {
        str(r)
        for r in Expression(
            "[i for i in tasks.a.outputs.result] + [params.n, item['id']]"
        ).references()
    }
    assert refs == {"tasks.a.outputs.result", "params.n", "item.id"}


def test_whole_template_keeps_type_and_mixed_template_renders_text() -> None:
    assert Template("{{ tasks.a.outputs.result }}").render(NAMES) == [1, 2, 3]
    assert (
        Template("n={{ params.n }} r={{ tasks.a.outputs.result }}").render(NAMES) == "n=3 r=[1,2,3]"
    )
    assert Template("no templates").render(NAMES) == "no templates"
    assert render_value({"k": ["{{ params.name }}", 1]}, NAMES) == {"k": ["x", 1]}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(5, 5.0), ("5", 5.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0), (1.5, 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", "-1", True, "1x"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("range(10**20)", "range of over 1,000,000 numbers"),
        ("range(10**7)", "range of 10,000,000 numbers; at most 1,000,000"),
        ("4000000**4000000 % 7", "too large a number"),
        ("[list(range(10**6)) for i in range(10**6)]", "builds over 1,000,000 values"),
        ("[tuple(range(10**6)) for i in range(10**6)]", "builds over 1,000,000 values"),
        ("sorted(['x'], key=params.pop)", "KeyError: 'pop'"),
        ("'abc'.upper", "reads keys of mappings only"),
    ],
)
def test_hostile_expressions_fail_fast_and_change_nothing(source: str, error: str) -> None:
    import time

    params = {"x": 1}
    started = time.monotonic()
    with pytest.raises(ExpressionError, match=re.escape(error)):
        Expression(source).evaluate({"params": params})
    assert time.monotonic() - started < 2
    assert params == {"x": 1}


def test_ordinary_expressions_still_work() -> None:
    names = {"params": {"d": {"k": [3, 1, 2]}}}
    assert Expression("sorted(params.d.k)").evaluate(names) == [1, 2, 3]
    assert Expression("2**100 % 7").evaluate(names) == 2**100 % 7
    assert Expression("len(list(range(1000)))").evaluate(names) == 1000


class CountedWalks(list[int]):
    """A parameter's list that counts each time something walks through it."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        CountedWalks.walks += 1
        return super().__iter__()


def test_a_value_read_again_in_a_comprehension_is_not_walked_each_turn() -> None:
    """``r not in params.skip`` over a thousand rows read ``skip`` a thousand times;
    each read must not look through its items (20,000 here), or the coordinator's work
    grows with the product of the two (4 s for these sizes, hours for a fan-out's)."""
    CountedWalks.walks = 0
    skip = CountedWalks(range(0, 40_000, 2))
    rows = list(range(1_000))
    kept = Expression("[r for r in params.rows if r not in params.skip]").evaluate(
        {"params": {"rows": rows, "skip": skip}}
    )
    assert kept == [r for r in rows if r % 2]
    assert CountedWalks.walks == 0


@pytest.mark.parametrize("forbidden", [re, eval, getattr, type])
def test_a_module_or_forbidden_function_given_as_a_value_is_still_refused(
    forbidden: object,
) -> None:
    with pytest.raises(ExpressionError):
        Expression("params.x").evaluate({"params": {"x": forbidden}})


@pytest.mark.parametrize(
    "source",
    [
        "[r for r in range(10**6) if r in params.big]",
        "[sum(params.big) for i in range(10**6)]",
        "[len(str(params.big)) for i in range(10**6)]",
        "[to_json(params.big) == '' for i in range(10**6)]",
        "[params.big == params.big for i in range(10**6)]",
        "[len(params.text + params.text) for i in range(10**6)]",
        "[params.text[1:] for i in range(10**6)]",
        "[('%s' % [params.big]) for i in range(10**6)]",
    ],
)
def test_work_that_goes_through_values_is_bounded(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A million turns each going through a 20,000-item parameter would hold the
    coordinator for minutes to hours; the evaluation stops at MAX_WORK instead (here a
    hundredth of it, reached a hundred times sooner)."""
    import contracts.evaluation_bounds

    bound = MAX_WORK // 100
    monkeypatch.setattr(contracts.evaluation_bounds, "MAX_WORK", bound)
    params = {"big": list(range(20_000)), "text": "x" * 20_000}
    with pytest.raises(ExpressionError, match=f"reads or makes over {bound:,} items"):
        Expression(source).evaluate({"params": params})
    assert params["big"] == list(range(20_000))


def test_lookups_and_filters_within_the_bound_still_work() -> None:
    names = {"params": {"rows": list(range(10_000)), "skip": list(range(0, 2_000, 2))}}
    kept = Expression("[r for r in params.rows if r not in params.skip]").evaluate(names)
    assert len(kept) == 9_000
    # Each evaluation has its own budget.
    assert Expression("sum(params.rows)").evaluate(names) == sum(range(10_000))
    assert Expression("'a' in {'a': 1}").evaluate(names) is True


@pytest.mark.parametrize(
    "source",
    [
        "[params.big[1:] for i in range(10**6)]",
        "[params.big + [0] for i in range(10**6)]",
        "[params.d | {} for i in range(10**6)]",
        "[[*params.big] for i in range(10**6)]",
        "[{**params.d} for i in range(10**6)]",
    ],
)
def test_copies_of_a_list_count_as_the_values_they_build(source: str) -> None:
    """A million copies of a 20,000-item list would need 160 GB; they stop at the
    million values an evaluation may build."""
    with pytest.raises(ExpressionError, match="builds over 1,000,000 values"):
        Expression(source).evaluate(
            {"params": {"big": list(range(20_000)), "d": {str(i): i for i in range(20_000)}}}
        )
    assert Expression("params.big[2:4] + [9]").evaluate({"params": {"big": [0, 1, 2, 3]}}) == [
        2,
        3,
        9,
    ]
