"""`recursa demo`, the README's main job, end to end on the embedded model (one short problem, few tokens)."""

from typer.testing import CliRunner

from recursa.cli import app
from recursa.eval.demo import DEMO_METHODS, demo_tasks, run_demo, run_long_context_demo


def test_demo_runs_every_method_side_by_side(qwen):
    tasks = demo_tasks(1)
    skipped: dict[str, str] = {}
    rows = run_demo(qwen, tasks, max_tokens=24, on_skip=skipped.__setitem__)
    assert sorted([r.label for r in rows] + list(skipped)) == sorted(label for label, _, _ in DEMO_METHODS)
    by_label = {r.label: r for r in rows}
    single, text_mas, latent_mas = by_label["single"], by_label["text-mas"], by_label["latent-mas"]
    assert all(len(r.answers) == len(r.correct) == 1 and r.seconds > 0 for r in rows)
    # the text team decodes for every agent, the latent team only for the last one
    assert text_mas.decoded_tokens > latent_mas.decoded_tokens > 0
    assert latent_mas.latent_steps == 3 * 4 and text_mas.latent_steps == single.latent_steps == 0
    if "recursive-mas" in skipped:              # only before the default system's links are trained
        assert "train-links" in skipped["recursive-mas"]
    else:
        assert by_label["recursive-mas"].latent_steps > 0 and by_label["recursive-mas"].decoded_tokens > 0


def test_long_context_demo_never_puts_the_document_in_a_prompt(qwen):
    row = run_long_context_demo(qwen, context_chars=60_000, max_iterations=2)
    assert row.context_chars >= 60_000 and row.iterations >= 1
    assert 0 < row.largest_prompt_tokens < row.context_chars // 8     # ~4 chars a token: far below the document


def test_demo_command_prints_the_table(qwen):
    result = CliRunner().invoke(app, ["demo", "--problems", "1", "--max-tokens", "8", "--long-context-chars", "0"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for label in ("single", "text-mas", "latent-mas", "decoded tok", "vs text-mas"):
        assert label in result.output
