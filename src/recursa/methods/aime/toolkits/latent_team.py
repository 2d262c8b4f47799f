"""`latent-team`: hand a reasoning question to a `latent-mas` team (one white-box model thinking in latent
steps on a shared KV memory) as one tool call."""

from __future__ import annotations

from pydantic import BaseModel, Field

from recursa.methods.aime.toolkits.base import Tool, ToolEnv, ToolFailure, Toolkit


class TeamArgs(BaseModel):
    question: str = Field(max_length=600)


def toolkit(env: ToolEnv) -> Toolkit:
    def ask(args: TeamArgs) -> str:
        from recursa.methods.base import Task, create

        team = create("latent-mas", env.model, budget=env.budget, max_tokens=int(env.options.get("team_tokens", 384)))
        answer = team.solve(Task(question=args.question))
        if not answer.text.strip():
            raise ToolFailure("the team gave no answer")
        return answer.text.strip()[:1500]

    return Toolkit("latent-team", "ask a team of reasoners (thinking together) a hard reasoning question",
                   [Tool("ask_team", "have a reasoning team answer a self-contained question", TeamArgs, ask)])
