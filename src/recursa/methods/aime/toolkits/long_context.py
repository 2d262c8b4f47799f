"""`long-context`: a question over a workspace file of any size, answered by the `rlm` method.

The file never enters the actor's prompt: an RLM holds it in its own sandboxed REPL and reads it with code and
sub-calls, under the run's shared budget.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from recursa.methods.aime.toolkits.base import Tool, ToolEnv, ToolFailure, Toolkit
from recursa.methods.aime.toolkits.workspace import resolve


class AskArgs(BaseModel):
    path: str = Field(max_length=200)
    question: str = Field(max_length=300)


def toolkit(env: ToolEnv) -> Toolkit:
    def ask(args: AskArgs) -> str:
        from recursa.methods.base import Task, create

        path = resolve(env.workspace, args.path)
        if not path.is_file():
            raise ToolFailure(f"no file {args.path!r} in the workspace")
        options = {"max_depth": 1, "max_iterations": int(env.options.get("rlm_iterations", 6))}
        rlm = create("rlm", env.model, budget=env.budget, **options)
        answer = rlm.solve(Task(question=args.question, context=path.read_text(encoding="utf-8", errors="replace")))
        if not answer.text.strip():
            raise ToolFailure(f"the document reader found no answer ({answer.stopped or 'empty reply'})")
        return answer.text.strip()[:1500]

    return Toolkit("long-context", "ask a question about a long workspace file (any size; read by a sub-agent)",
                   [Tool("ask_document", "answer a question from a long file in the workspace", AskArgs, ask)])
