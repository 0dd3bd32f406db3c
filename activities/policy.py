"""The approval policy as a local activity of the turn: its verdict is recorded in the turn's history.

Evaluated inside the workflow, a verdict would be taken again on every replay, with whatever policy
code runs then; a changed rule would then change a decision already given to Codex, and the replay
would fail. As a local activity on the chat's own worker it costs no task-queue hop, and the verdict
Codex was given is the one replay reads back (docs/operations.md, "Restarts and upgrades").
"""

from __future__ import annotations

from temporalio import activity

from ally.contracts import PolicyQuestion, Verdict
from ally.policy import evaluate


@activity.defn(name="evaluate_policy")
async def evaluate_policy(question: PolicyQuestion) -> Verdict:
    """The policy's verdict on one request. The policy is pure and quick (a parse and a few table
    look-ups), so it runs on the event loop. A fault in it sends the request to a person."""
    try:
        return evaluate(
            question.request,
            policy=question.policy,
            mode=question.mode,
            workspace=question.workspace,
            grants=question.grants,
            group=question.group,
        )
    except Exception:  # a bug here must cost a question, never an automatic yes
        activity.logger.exception("the policy failed on request %s", question.request.key)
        return Verdict(decision=None, rule="the policy could not judge this request")
