"""The retrain alert: a Prefect automation that notifies the team when a `retrain-and-eval` run goes wrong.

A weekly job nobody watches must say when it failed. The automation fires on the state events of every
`retrain-and-eval` flow run (scheduled or started by hand) that ends `Failed`, `TimedOut` or `Crashed`,
or `Rejected`: the flow's Completed state when its candidate was judged and not promoted (`flows/
retrain_and_eval.py`). Its action sends the run's name, state, message and UI link through a notification
block: by default a custom webhook block (`custom-webhook/r3fa-alerts`) that POSTs JSON
`{"subject", "body", "name"}` to the URL the team gives (`make deploy ALERT_WEBHOOK=https://...`); any other
notification block the team saved (Slack, Teams, e-mail...) is used by its slug instead.

Prefect 3.8's `prefect.yaml` cannot declare it: deployment `triggers` there always *run* a deployment,
never notify. So `make deploy` (`scripts/prefect_services.py deploy`) calls `ensure_retrain_alert`, which
replaces the automation of the same name, and re-deploying never duplicates it.
"""

from __future__ import annotations

from uuid import UUID

from prefect.automations import Automation
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

AUTOMATION = "r3fa-retrain-alert"
FLOW = "retrain-and-eval"
WEBHOOK_BLOCK = "r3fa-alerts"  # default block document name, type `custom-webhook`
ALERT_STATES = ("Failed", "TimedOut", "Crashed", "Rejected")
SUBJECT = "r3fa: retrain run {{ flow_run.name }} ended {{ flow_run.state.name }}"
BODY = (
    "The {{ flow.name }} run {{ flow_run.name }} ended {{ flow_run.state.name }}.\n"
    "Message: {{ flow_run.state.message }}\n"
    "Flow run: {{ flow_run|ui_url }}"
)


def save_webhook_block(url: str, name: str = WEBHOOK_BLOCK) -> str:
    """Save (or replace) the default notification block: a JSON POST of subject, body and name to `url`.

    Returns:
        The block's slug, `custom-webhook/<name>`.
    """
    block = CustomWebhookNotificationBlock(
        name=name, url=url, method="POST", json_data={"subject": "{{subject}}", "body": "{{body}}", "name": "{{name}}"}
    )
    block.save(name, overwrite=True)
    return f"{CustomWebhookNotificationBlock.get_block_type_slug()}/{name}"


def retrain_alert(block_document_id: UUID) -> Automation:
    """The automation (not yet created): the `retrain-and-eval` runs that end badly, notified through the block."""
    return Automation(
        name=AUTOMATION,
        description=f"Notify when a {FLOW} run ends {', '.join(ALERT_STATES)} (flows/alerts.py)",
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in ALERT_STATES},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW},
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=SUBJECT, body=BODY)],
    )


def ensure_retrain_alert(webhook_url: str | None = None, block: str | None = None) -> str:
    """Create (or replace) the retrain alert; returns one line saying what was done.

    Args:
        webhook_url: save the default webhook block with this URL first.
        block: slug (`type/name`) of the notification block to use; default `custom-webhook/r3fa-alerts`.

    Returns:
        What was set up, or why nothing was (no URL given and no such block saved yet).
    """
    if webhook_url:
        block = save_webhook_block(webhook_url)
    slug = block or f"{CustomWebhookNotificationBlock.get_block_type_slug()}/{WEBHOOK_BLOCK}"
    try:
        notifier = Block.load(slug)
    except ValueError:
        notifier = None
    if not isinstance(notifier, NotificationBlock):
        return (
            f"retrain alert: not set up, no notification block {slug!r}; give a URL "
            "(make deploy ALERT_WEBHOOK=https://...) or the slug of a saved notification block (ALERT_BLOCK=type/name)"
        )
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(AUTOMATION):
            client.delete_automation(old.id)
    created = retrain_alert(notifier._block_document_id).create()
    return f"retrain alert: automation {created.name} ({created.id}) notifies {slug} on {FLOW} runs that end " + (
        ", ".join(ALERT_STATES)
    )

