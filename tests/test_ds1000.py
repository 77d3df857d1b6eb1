"""DS-1000-style evaluation: post-processing, programs, the course's problems, the split, pass@1."""

import ast
import importlib.util
import math
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import helpers.ds1000 as ds1000
from helpers.ds1000 import (
    LIBRARY_MODULES,
    PERTURBATION_TYPES,
    STOP_MARKERS,
    build_program,
    checked_in_answer_process,
    end_marker,
    failed_references,
    group_key,
    load_problems,
    missing_modules,
    network_reason,
    pass_at_1,
    pass_at_1_by,
    postprocess,
    required_modules,
    score_table,
    split_by_origin,
    training_pair,
)
from helpers.ds1000_env import ensure_env, interpreter_versions

PROBLEMS = load_problems()


@pytest.fixture(scope="module")
def ds1000_python():
    """DS-1000's interpreter (created on first use, cached: one to two minutes, once)."""
    try:
        return str(ensure_env())
    except Exception as exc:  # no registry reachable: nothing here can run the tests
        pytest.skip(f"DS-1000's interpreter cannot be created here: {exc}")


@pytest.fixture
def evaluate(ds1000_python):
    """helpers.ds1000.evaluate, with DS-1000's interpreter."""

    def run(*args, **kwargs):
        return ds1000.evaluate(*args, **kwargs)

    return run


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
        ("result = a + 1\nEND SOLUTION\n<code>junk", "result = a + 1"),
        # The official rules do not cut at "# SOLUTION END": it stays, as a comment.
        ("plt.plot(x)\n# SOLUTION END\n\nplt.show()", "plt.plot(x)\n# SOLUTION END\n\nplt.show()"),
        ("```python\nresult = 2\n```\nThis works because...", "\nresult = 2\n"),
        # An answer opened by a bare fence is cut at it, and is lost (as officially).
        ("```\nresult = 3\n```", ""),
        ("<code>result = 5</code>", "result = 5"),
        ("result = 6\n", "result = 6\n"),
        ("", ""),
        # "END SOLUTION" cuts only where it starts a line.
        (
            "    b = a + 1\n    ### END SOLUTION\n    return b\n",
            "    b = a + 1\n    ### END SOLUTION\n    return b\n",
        ),
        ("result = 1  # END SOLUTION is near\n", "result = 1  # END SOLUTION is near\n"),
    ],
)
def test_postprocess_follows_the_official_rules_exactly(completion, code):
    assert postprocess(completion) == code


def official_postprocess(code):
    """xlang-ai/DS-1000, test_ds1000.py, ``postprocess`` (the list case left out)."""
    code = code.split("</code>")[0]
    code = code.replace("```python", "")
    code = code.split("```")[0]
    code = code.split("\nEND SOLUTION")[0]
    code = code.replace("<code>", "")
    return code


def test_postprocess_agrees_with_the_official_function_on_random_mixtures():
    pieces = [
        "x = 1",
        "\n",
        "    ",
        "</code>",
        "<code>",
        "```",
        "```python",
        "END SOLUTION",
        "\nEND SOLUTION",
        "### END SOLUTION",
        "# SOLUTION END",
        "return b",
        "py",
    ]
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert postprocess(text) == official_postprocess(text), repr(text)


def test_generation_stops_where_postprocess_cuts():
    for marker in STOP_MARKERS:
        if marker == "# SOLUTION END":  # a comment; the official postprocess keeps it
            continue
        assert postprocess("result = 1" + marker + "\nmore") == "result = 1"
    assert "END SOLUTION" not in STOP_MARKERS  # would stop inside "    ### END SOLUTION"
    body = "    b = a + 1\n    ### END SOLUTION\n    return b\n"
    assert not any(marker in body for marker in STOP_MARKERS)


def test_postprocess_leaves_a_clean_answer_alone():
    for problem in PROBLEMS:
        assert postprocess(problem["reference_code"]) == problem["reference_code"]


def function_style_problems():
    return [p for p in PROBLEMS if p["prompt"].endswith("### BEGIN SOLUTION\n")]


def test_function_style_references_have_ds1000s_end_solution_comment_before_the_return():
    problems = function_style_problems()
    assert len(problems) >= 4
    for problem in problems:
        lines = problem["reference_code"].splitlines()
        assert lines[-2:] == ["    ### END SOLUTION", "    return result"], lines


def test_a_function_style_answer_keeps_its_return_and_passes(evaluate):
    problems = function_style_problems()
    results = evaluate(
        problems, [p["reference_code"] + "\n</code>" for p in problems], progress=False
    )
    assert [r["verdict"] for r in results] == ["pass"] * len(problems), results
    assert all(r["solution"].rstrip().endswith("return result") for r in results)


def test_a_stripped_function_body_fails_as_it_does_officially(evaluate):
    # Nothing puts back the first line's indentation (the official harness does not).
    problem = function_style_problems()[0]
    stripped = problem["reference_code"].strip()
    result = evaluate([problem], [stripped + "\n</code>"], progress=False)[0]
    assert result["verdict"] == "error" and "IndentationError" in result["detail"]


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


def test_problems_whose_library_is_missing_are_skipped_not_failed(evaluate, ds1000_python):
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
    assert "course_module_that_does_not_exist" in missing_modules(fake, ds1000_python)
    assert missing_modules(a_problem("Numpy"), ds1000_python) == []
    results = evaluate(problems, [fake["reference_code"], "result = 0"], progress=False)
    assert results[0]["verdict"] == "skipped"
    assert "course_module_that_does_not_exist" in results[0]["detail"]
    assert results[0]["pid"] is None  # never started
    assert results[1]["verdict"] == "fail"
    assert pass_at_1(results) == 0.0  # the skipped one is not counted as a failure
    assert pass_at_1_by(results, "library") == {"Numpy": 0.0}


# ------------------------------------------------------------------ running the references


def test_every_reference_solution_passes_in_ds1000s_interpreter(evaluate, ds1000_python):
    results = evaluate(PROBLEMS, [p["reference_code"] for p in PROBLEMS], progress=False)
    versions = interpreter_versions(ds1000_python)
    assert (versions["numpy"], versions["pandas"]) == ("1.26.4", "1.5.3")
    if importlib.util.find_spec("torch") is not None and sys.version_info[:2] <= (3, 11):
        assert versions["torch"] is not None  # the same Python: this one's torch is shared
    for problem, result in zip(PROBLEMS, results, strict=True):
        if problem["metadata"]["library"] == "Pytorch" and versions["torch"] is None:
            assert result["verdict"] == "skipped" and "torch" in result["detail"]
            continue
        assert result["verdict"] == "pass", (result["problem_id"], result["detail"])
        assert result["pid"] is not None
        assert result["checked_in"] == ("answer" if checked_in_answer_process(problem) else "judge")
    assert len(failed_references(results)) == sum(r["verdict"] != "pass" for r in results)
    by_library = pass_at_1_by(results, "library")
    assert {"Numpy", "Pandas", "Scipy", "Sklearn", "Matplotlib"} <= set(by_library)
    assert set(by_library.values()) == {1.0}


def test_failed_references_lists_every_reference_that_did_not_pass_with_its_reason():
    results = [
        {"problem_id": 0, "library": "Numpy", "verdict": "pass", "detail": ""},
        {
            "problem_id": 1,
            "library": "Scipy",
            "verdict": "skipped",
            "detail": "not installed: scipy",
        },
        {"problem_id": 2, "library": "Pandas", "verdict": "error", "detail": "AttributeError: x"},
    ]
    table = failed_references(results)
    assert list(table["problem_id"]) == [1, 2]
    assert list(table["reason"]) == ["not installed: scipy", "AttributeError: x"]
    assert failed_references(results[:1]).empty


def test_problems_that_need_the_network_are_skipped_with_that_reason(evaluate):
    problem = dict(a_problem("Numpy"))
    problem["code_context"] = (
        "import seaborn as sns\ndf = sns.load_dataset('tips')\n" + problem["code_context"]
    )
    assert "seaborn.load_dataset" in network_reason(problem)
    assert network_reason(a_problem("Numpy")) is None
    assert "fetch_" in network_reason({**problem, "code_context": "X = fetch_openml('x')"})
    result = evaluate([problem], [problem["reference_code"]], progress=False)[0]
    assert result["verdict"] == "skipped" and "needs the network" in result["detail"]


def test_wrong_and_empty_answers_do_not_pass(evaluate):
    chosen = [
        p
        for p in PROBLEMS
        if p["metadata"]["library"] in ("Numpy", "Pandas")
        and p["metadata"]["perturbation_type"] == "Origin"
    ]
    wrong = [
        "    return None"
        if p["prompt"].endswith("### BEGIN SOLUTION\n")
        else "df = df.head(1)"
        if "df = ... #" in p["prompt"]
        else "result = np.zeros(3)"
        for p in chosen
    ]
    results = evaluate(chosen, wrong, progress=False)
    assert [r["verdict"] for r in results] == ["fail"] * len(chosen)
    # An empty answer leaves the input as it was: never a pass.
    empty = evaluate(PROBLEMS[:3] + chosen[-3:], [""] * 6, progress=False)
    assert "pass" not in {r["verdict"] for r in empty}


def test_a_semantic_variant_really_asks_for_something_else(evaluate):
    # The Origin's answer fails the test of its Semantic variant.
    pairs = []
    for problem in PROBLEMS:
        if problem["metadata"]["perturbation_type"] == "Semantic":
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


def test_evaluate_cleans_the_raw_completion_first(evaluate):
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
        code = postprocess(pair["completion"]).strip()
        if end_marker(problem) == "# SOLUTION END":  # kept by postprocess: a comment
            code = code.removesuffix("# SOLUTION END").strip()
        assert code == problem["reference_code"].strip()
        assert end_marker(problem) in STOP_MARKERS
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


# ------------------------------------------------------------------ DS-1000's interpreter


def test_the_environment_folder_follows_the_pins_and_can_be_moved(monkeypatch, tmp_path):
    import helpers.ds1000_env as env

    monkeypatch.delenv("COURSE_DS1000_ENV", raising=False)
    default = env.env_dir()
    assert default.name.startswith("ds1000-env-")
    monkeypatch.setattr(env, "PINS", {**env.PINS, "numpy": "1.26.3"})
    assert env.env_dir() != default  # new pins, a new environment
    monkeypatch.setenv("COURSE_DS1000_ENV", str(tmp_path / "elsewhere"))
    assert env.env_dir() == tmp_path / "elsewhere"


def test_shared_packages_never_shadow_the_pinned_libraries():
    from helpers.ds1000_env import _shared_packages

    links = _shared_packages(["pandas", "scipy"])
    assert not {"numpy", "pandas", "scipy"} & set(links)
    if importlib.util.find_spec("torch") is not None:
        assert "torch" in links and any(name.startswith("torch-") for name in links)


@pytest.mark.parametrize("version", [(3, 11, 7), (3, 13, 2)])
def test_the_environment_is_made_with_venv_and_pip_or_with_a_uv_python(
    version, monkeypatch, tmp_path
):
    # What would run, recorded instead (the uv path needs Colab's internet: not run here).
    import helpers.ds1000_env as env

    commands = []

    def record(command, what):
        commands.append(command)
        if "venv" in command:
            Path(command[-1]).mkdir(parents=True)

    monkeypatch.setattr(env, "_run", record)
    monkeypatch.setattr(env, "_uv", lambda: None)
    monkeypatch.setattr(env, "_link_shared", lambda folder: [])
    monkeypatch.setattr(env.sys, "version_info", version)
    env.create_env(tmp_path / "ds1000-env")
    pins = [f"{name}=={v}" for name, v in env.PINS.items()]
    assert all(pin in commands[-1] for pin in pins)
    if version[:2] <= (3, 11):
        assert commands[0][1:3] == ["-m", "venv"] and commands[1][1:4] == ["-m", "pip", "install"]
    else:
        assert commands[0][-1] == "uv"  # pip install uv
        assert commands[1][3:6] == ["venv", "--quiet", "--python"] and commands[1][6] == "3.11"
        assert commands[2][3:5] == ["pip", "install"]
    assert (tmp_path / "ds1000-env" / "course-ready.json").exists()


def test_links_left_by_a_deleted_course_venv_are_made_again(monkeypatch, tmp_path):
    # Found on a clean clone: the cached environment linked the torch of a clone deleted
    # since, so every torch problem was skipped as "not installed". ensure_env re-links.
    import json

    import helpers.ds1000_env as env

    folder = tmp_path / "ds1000-env"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(sys.executable)
    (folder / "course-ready.json").write_text(json.dumps({"pins": env.PINS, "shared": []}))
    shared = folder / "shared-packages"
    shared.mkdir()
    (shared / "torch").symlink_to(tmp_path / "deleted-venv" / "torch")
    relinked = []
    monkeypatch.setenv("COURSE_DS1000_ENV", str(folder))
    monkeypatch.setattr(env, "_link_shared", lambda at: relinked.append(at) or [])
    monkeypatch.setattr(env, "create_env", lambda at: pytest.fail("the venv must be kept"))
    assert env.ensure_env() == folder / "bin" / "python"
    assert relinked == [folder] and not shared.exists()  # dangling links gone, linked anew
    shared.mkdir()
    (shared / "torch").symlink_to(tmp_path)  # a link that leads somewhere is kept
    env.ensure_env()
    assert relinked == [folder]


def test_without_ds1000s_interpreter_evaluate_warns_and_uses_this_python(monkeypatch):
    def cannot(*args, **kwargs):
        raise RuntimeError("no registry")

    monkeypatch.setattr(ds1000, "ensure_env", cannot)
    problem = a_problem("Numpy")
    with pytest.warns(UserWarning, match="could not be created"):
        result = ds1000.evaluate([problem], [problem["reference_code"]], progress=False)[0]
    assert result["interpreter"] == sys.executable and result["verdict"] == "pass"
