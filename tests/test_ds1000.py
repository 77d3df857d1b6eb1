"""DS-1000-style evaluation: post-processing, programs, the course's problems, the split, pass@1."""

import ast
import importlib.util
import math
import random
from collections import Counter, defaultdict

import pytest

from helpers.ds1000 import (
    LIBRARY_MODULES,
    PERTURBATION_TYPES,
    build_program,
    end_marker,
    evaluate,
    group_key,
    load_problems,
    missing_modules,
    pass_at_1,
    pass_at_1_by,
    postprocess,
    required_modules,
    restore_indent,
    score_table,
    split_by_origin,
    training_pair,
)

PROBLEMS = load_problems()


def by_id(problem_id):
    return next(p for p in PROBLEMS if p["metadata"]["problem_id"] == problem_id)


def a_problem(library, ptype="Origin"):
    return next(
        p
        for p in PROBLEMS
        if p["metadata"]["library"] == library and p["metadata"]["perturbation_type"] == ptype
    )


# ------------------------------------------------------------------ post-processing


@pytest.mark.parametrize(
    ("completion", "code"),
    [
        ("result = a + 1\n</code>\nEND SOLUTION\nmore text", "result = a + 1\n"),
        ("result = a + 1\nEND SOLUTION\n<code>junk", "result = a + 1\n"),
        ("plt.plot(x)\n# SOLUTION END\n\nplt.show()", "plt.plot(x)\n"),
        ("```python\nresult = 2\n```\nThis works because...", "result = 2\n"),
        ("```\nresult = 3\n```", "result = 3\n"),
        ("  ```py\nresult = 4\n```", "result = 4\n"),
        ("<code>result = 5</code>", "result = 5"),
        ("result = 6\n", "result = 6\n"),
        ("", ""),
    ],
)
def test_postprocess_keeps_only_the_answer_like_the_official_harness(completion, code):
    assert postprocess(completion) == code


def test_postprocess_leaves_a_clean_answer_alone():
    for problem in PROBLEMS:
        assert postprocess(problem["reference_code"]) == problem["reference_code"]


def function_style_problem():
    return next(p for p in PROBLEMS if p["prompt"].endswith("### BEGIN SOLUTION\n"))


def test_restore_indent_puts_back_only_what_stripping_took():
    problem = function_style_problem()
    body = problem["reference_code"]
    assert body.startswith("    ")
    assert restore_indent(problem, body) == body
    assert restore_indent(problem, body.strip()) == body.rstrip()
    assert restore_indent(problem, "result = 1") == "    result = 1"
    # Nothing is indented: not a stripped body, left as the model wrote it (and it fails).
    assert restore_indent(problem, "x = 1\nreturn x") == "x = 1\nreturn x"
    assert restore_indent(a_problem("Numpy"), "result = a") == "result = a"


def test_a_function_style_answer_passes_even_after_stripping():
    problem = function_style_problem()
    stripped = problem["reference_code"].strip()
    cleaned = evaluate([problem], [stripped + "\n</code>"], progress=False)[0]
    assert cleaned["verdict"] == "pass", cleaned["detail"]
    raw = evaluate([problem], [stripped], clean=False, progress=False)[0]
    assert raw["verdict"] == "error" and "IndentationError" in raw["detail"]


# ------------------------------------------------------------------ the test program


def test_build_program_is_context_then_test_execution_on_the_quoted_answer():
    problem = a_problem("Numpy")
    solution = "result = np.convolve(a, np.ones(k) / k, mode='valid')  # \"quotes\"\n\\n"
    program = build_program(problem, solution)
    context = problem["code_context"]
    assert program.startswith(context + "\n")
    lines = program[len(context) + 1 :].splitlines()
    assert lines[0].startswith("code = ")
    assert ast.literal_eval(lines[0][len("code = ") :]) == solution  # safely quoted
    assert lines[1] == "test_execution(code)"
    assert "test_string" not in program[len(context) :]
    ast.parse(program)


def test_build_program_also_calls_test_string_when_the_context_defines_it():
    with_string = [p for p in PROBLEMS if "def test_string(" in p["code_context"]]
    assert with_string, "some problems forbid loops through test_string"
    program = build_program(with_string[0], "result = 1")
    assert program.rstrip().endswith("test_execution(code)\ntest_string(code)")


# ------------------------------------------------------------------ the problem file


def test_the_problems_follow_ds1000s_schema():
    assert len(PROBLEMS) >= 24
    ids = [p["metadata"]["problem_id"] for p in PROBLEMS]
    assert ids == list(range(len(PROBLEMS)))
    for problem in PROBLEMS:
        assert set(problem) == {"prompt", "reference_code", "code_context", "metadata"}
        meta = problem["metadata"]
        assert set(meta) == {
            "problem_id",
            "library_problem_id",
            "library",
            "test_case_cnt",
            "perturbation_type",
            "perturbation_origin_id",
        }
        assert meta["library"] in LIBRARY_MODULES
        assert meta["perturbation_type"] in PERTURBATION_TYPES
        prompt = problem["prompt"]
        assert prompt.endswith(
            ("BEGIN SOLUTION\n<code>\n", "# SOLUTION START\n", "    ### BEGIN SOLUTION\n")
        )
        context = problem["code_context"]
        ast.parse(context)
        for name in ("def generate_test_case(", "def exec_test(", "exec_context = r"):
            assert name in context
        assert "def test_execution(solution: str):" in context
        assert "[insert]" in context
        assert f"for i in range({meta['test_case_cnt']}):" in context


def test_library_ids_and_perturbation_groups_are_consistent():
    counters = Counter()
    origins = {}
    for problem in PROBLEMS:
        meta = problem["metadata"]
        assert meta["library_problem_id"] == counters[meta["library"]]
        counters[meta["library"]] += 1
        if meta["perturbation_type"] == "Origin":
            assert meta["perturbation_origin_id"] == meta["library_problem_id"]
            origins[group_key(problem)] = problem
    groups = defaultdict(list)
    for problem in PROBLEMS:
        assert group_key(problem) in origins, "every variant points to an Origin problem"
        groups[group_key(problem)].append(problem["metadata"]["perturbation_type"])
    assert {"Numpy", "Pandas"} <= set(counters)
    assert counters["Numpy"] >= 8 and counters["Pandas"] >= 8
    assert set(PERTURBATION_TYPES) == {t for types in groups.values() for t in types}
    assert sum(len(types) > 1 for types in groups.values()) >= 6  # several real groups
    for library in counters:
        assert len({key for key in groups if key[0] == library}) >= 2, library
    # Libraries the course does not install, so that skipping is exercised.
    assert {"Scipy", "Sklearn"} <= set(counters)


# ------------------------------------------------------------------ modules and skipping


def test_required_modules_reads_imports_of_the_context_and_of_its_exec_template():
    problem = {
        "metadata": {"library": "Numpy"},
        "code_context": (
            "import numpy as np\nimport copy, io\nfrom collections import Counter\n"
            'exec_context = r"""\nimport pandas as pd\nfrom PIL import Image\n[insert]\n"""\n'
        ),
    }
    assert required_modules(problem) == ["PIL", "numpy", "pandas"]  # stdlib left out
    function_style = {
        "metadata": {"library": "Pandas"},
        "code_context": 'exec_context = r"""\nimport seaborn as sns\ndef f(df):\n[insert]\n"""\n',
    }
    assert required_modules(function_style) == ["pandas", "seaborn"]
    assert required_modules(a_problem("Pytorch")) == ["numpy", "torch"]
    assert "scipy" in required_modules(a_problem("Scipy"))


def test_problems_whose_library_is_missing_are_skipped_not_failed():
    fake = {
        "prompt": "",
        "reference_code": "result = 1",
        "code_context": "import course_module_that_does_not_exist\n"
        "def test_execution(solution):\n    assert False\n",
        "metadata": {
            "problem_id": 99,
            "library": "Sklearn",
            "perturbation_type": "Origin",
            "perturbation_origin_id": 0,
        },
    }
    problems = [fake, a_problem("Numpy")]
    assert "course_module_that_does_not_exist" in missing_modules(fake)
    assert missing_modules(a_problem("Numpy")) == []
    results = evaluate(problems, [fake["reference_code"], "result = 0"], progress=False)
    assert results[0]["verdict"] == "skipped"
    assert "course_module_that_does_not_exist" in results[0]["detail"]
    assert results[0]["pid"] is None  # never started
    assert results[1]["verdict"] == "fail"
    assert pass_at_1(results) == 0.0  # the skipped one is not counted as a failure
    assert pass_at_1_by(results, "library") == {"Numpy": 0.0}


# ------------------------------------------------------------------ running the references


def test_every_reference_solution_passes_in_the_sandbox():
    results = evaluate(PROBLEMS, [p["reference_code"] for p in PROBLEMS], progress=False)
    for problem, result in zip(PROBLEMS, results, strict=True):
        missing = missing_modules(problem)
        if missing:
            assert result["verdict"] == "skipped", result
        else:
            assert result["verdict"] == "pass", (result["problem_id"], result["detail"])
            assert result["pid"] is not None
    ran = [r for r in results if r["verdict"] != "skipped"]
    assert len(ran) >= 24
    assert pass_at_1(results) == 1.0
    by_library = pass_at_1_by(results, "library")
    assert {"Numpy", "Pandas"} <= set(by_library)
    assert set(by_library.values()) == {1.0}
    for library, module in (("Scipy", "scipy"), ("Sklearn", "sklearn")):
        if importlib.util.find_spec(module) is None:
            assert library not in by_library
            assert all(r["verdict"] == "skipped" for r in results if r["library"] == library)


def test_wrong_and_empty_answers_do_not_pass():
    chosen = [
        p
        for p in PROBLEMS
        if p["metadata"]["library"] in ("Numpy", "Pandas")
        and p["metadata"]["perturbation_type"] == "Origin"
    ]
    wrong = [
        "df = df.head(1)" if "df = ... #" in p["prompt"] else "result = np.zeros(3)" for p in chosen
    ]
    results = evaluate(chosen, wrong, progress=False)
    assert [r["verdict"] for r in results] == ["fail"] * len(chosen)
    # An empty answer leaves the input as it was: never a pass.
    empty = evaluate(PROBLEMS[:3] + chosen[-3:], [""] * 6, progress=False)
    assert "pass" not in {r["verdict"] for r in empty}


def test_a_semantic_variant_really_asks_for_something_else():
    # The Origin's answer fails the test of its Semantic variant.
    pairs = []
    for problem in PROBLEMS:
        if problem["metadata"]["perturbation_type"] == "Semantic" and not missing_modules(problem):
            origin = next(
                p
                for p in PROBLEMS
                if group_key(p) == group_key(problem)
                and p["metadata"]["perturbation_type"] == "Origin"
            )
            pairs.append((problem, origin["reference_code"]))
    assert len(pairs) >= 4
    results = evaluate([p for p, _ in pairs], [c for _, c in pairs], progress=False)
    assert "pass" not in {r["verdict"] for r in results}


def test_evaluate_cleans_the_raw_completion_first():
    problem = a_problem("Numpy")
    raw = problem["reference_code"] + "\n</code>\nEND SOLUTION\nAnd that is how it works."
    cleaned = evaluate([problem], [raw], progress=False)[0]
    assert cleaned["verdict"] == "pass"
    assert cleaned["solution"] == problem["reference_code"] + "\n"
    kept = evaluate([problem], [raw], clean=False, progress=False)[0]
    assert kept["verdict"] == "error" and "SyntaxError" in kept["detail"]
    with pytest.raises(ValueError):
        evaluate([problem], [], progress=False)


# ------------------------------------------------------------------ training pairs


def test_training_pairs_end_where_postprocess_cuts():
    for problem in PROBLEMS:
        pair = training_pair(problem)
        assert pair["prompt"] == problem["prompt"]
        assert pair["completion"].rstrip().endswith(end_marker(problem))
        assert postprocess(pair["completion"]).strip() == problem["reference_code"].strip()
    assert end_marker(a_problem("Matplotlib")) == "# SOLUTION END"
    assert end_marker(a_problem("Pandas")) == "</code>"


# ------------------------------------------------------------------ the split


def synthetic_problems(seed=0):
    """Many groups of random sizes in 7 libraries; origin ids repeat across libraries."""
    rng = random.Random(seed)
    problems = []
    for library in LIBRARY_MODULES:
        for origin in range(rng.randint(3, 30)):
            for ptype in PERTURBATION_TYPES[: rng.randint(1, 4)]:
                problems.append(
                    {
                        "metadata": {
                            "problem_id": len(problems),
                            "library": library,
                            "perturbation_type": ptype,
                            "perturbation_origin_id": origin,
                        }
                    }
                )
    return problems


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_perturbation_group_crosses_the_split(seed):
    for problems in (PROBLEMS, synthetic_problems(seed)):
        train, held_out = split_by_origin(problems, eval_fraction=0.25, seed=seed)
        train_groups = {group_key(p) for p in train}
        held_groups = {group_key(p) for p in held_out}
        assert not train_groups & held_groups
        ids = sorted(p["metadata"]["problem_id"] for p in train + held_out)
        assert ids == sorted(p["metadata"]["problem_id"] for p in problems)
        # Stratified: every library is on both sides, with about a quarter of its groups held out.
        for library in {p["metadata"]["library"] for p in problems}:
            groups = {k for k in train_groups | held_groups if k[0] == library}
            held = {k for k in held_groups if k[0] == library}
            assert 1 <= len(held) < len(groups)
            assert abs(len(held) - 0.25 * len(groups)) <= 1


def test_the_split_is_by_library_and_origin_together():
    # Origin ids count within a library (as in DS-1000): Numpy's group 0 and Pandas' group 0
    # are different problems, and may land on different sides.
    assert group_key(by_id(0)) == ("Numpy", 0)
    assert group_key(a_problem("Pandas")) == ("Pandas", 0)
    problems = synthetic_problems(3)
    train, held_out = split_by_origin(problems, eval_fraction=0.3, seed=3)
    held_ids = {p["metadata"]["perturbation_origin_id"] for p in held_out}
    train_ids = {p["metadata"]["perturbation_origin_id"] for p in train}
    assert held_ids & train_ids  # an id held out in one library is trained on in another


def test_the_split_is_reproducible_and_depends_on_the_seed():
    problems = synthetic_problems(4)
    first = split_by_origin(problems, seed=7)
    assert first == split_by_origin(problems, seed=7)
    assert first != split_by_origin(problems, seed=8)
    with pytest.raises(ValueError):
        split_by_origin(problems, eval_fraction=1.0)


def test_a_library_with_one_group_stays_in_training():
    problems = [p for p in synthetic_problems(5) if p["metadata"]["library"] != "Numpy"]
    problems.append(
        {
            "metadata": {
                "problem_id": -1,
                "library": "Numpy",
                "perturbation_type": "Origin",
                "perturbation_origin_id": 0,
            }
        }
    )
    train, held_out = split_by_origin(problems)
    assert any(p["metadata"]["library"] == "Numpy" for p in train)
    assert not any(p["metadata"]["library"] == "Numpy" for p in held_out)


# ------------------------------------------------------------------ pass@1


def results_of(rows):
    return [
        {"library": lib, "perturbation_type": ptype, "verdict": verdict}
        for lib, ptype, verdict in rows
    ]


def test_pass_at_1_counts_passes_over_problems_that_ran():
    results = results_of(
        [
            ("Numpy", "Origin", "pass"),
            ("Numpy", "Surface", "fail"),
            ("Pandas", "Origin", "timeout"),
            ("Pandas", "Semantic", "pass"),
            ("Pandas", "Origin", "error"),
            ("Scipy", "Origin", "skipped"),
        ]
    )
    passed = sum(r["verdict"] == "pass" for r in results)
    ran = sum(r["verdict"] != "skipped" for r in results)
    assert pass_at_1(results) == pytest.approx(passed / ran)
    assert pass_at_1_by(results, "library") == {"Numpy": 0.5, "Pandas": pytest.approx(1 / 3)}
    assert pass_at_1_by(results, "perturbation_type") == {
        "Origin": pytest.approx(1 / 3),
        "Semantic": 1.0,
        "Surface": 0.0,
    }
    assert math.isnan(pass_at_1(results_of([("Scipy", "Origin", "skipped")])))

    table = score_table(results, "library")
    assert list(table.index) == ["Numpy", "Pandas", "Scipy"]
    assert table.loc["Pandas", "problems"] == 3
    assert table.loc["Pandas", "timeout"] == 1
    assert table.loc["Scipy", "skipped"] == 1
    assert table.loc["Numpy", "pass@1"] == 0.5
    assert math.isnan(table.loc["Scipy", "pass@1"])
