"""`recursa demo`, the README's main job, end to end on the embedded model (one short problem, few tokens)."""

from typer.testing import CliRunner

from recursa.cli import app
from recursa.eval.demo import DEMO_METHODS, demo_tasks, run_demo


def test_demo_runs_every_method_side_by_side(qwen):
    tasks = demo_tasks(1)
    rows = run_demo(qwen, tasks, max_tokens=24)
    assert [r.label for r in rows] == [label for label, _, _ in DEMO_METHODS]
    single, text_mas, latent_mas = rows
    assert all(len(r.answers) == len(r.correct) == 1 and r.seconds > 0 for r in rows)
    # the text team decodes for every agent, the latent team only for the last one
    assert text_mas.decoded_tokens > latent_mas.decoded_tokens > 0
    assert latent_mas.latent_steps == 3 * 4 and text_mas.latent_steps == single.latent_steps == 0


def test_demo_command_prints_the_table(qwen):
    result = CliRunner().invoke(app, ["demo", "--problems", "1", "--max-tokens", "8"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for label in ("single", "text-mas", "latent-mas", "decoded tok", "vs text-mas"):
        assert label in result.output
