"""`loyalty-admin campaigns diff|apply|list`: campaigns kept as YAML manifests (manifests.py), shown as a
diff against what the tenant has, applied after a yes (or --yes). A second apply of the same files
finds nothing to do. Calls carry fresh idempotency keys; updates carry the etag read for the diff,
so a campaign changed by someone else since is refused rather than overwritten unseen."""

import uuid
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf import field_mask_pb2
from rich.markup import escape
from rich.table import Column, Table

from loyalty.promotion.v1 import campaign_pb2, promotion_pb2, promotion_service_pb2 as api
from loyalty_gateway.cli.connection import Admin, console, print_table, run
from loyalty_gateway.cli.manifests import (
    KEY_LABEL,
    CampaignManifest,
    CampaignPlan,
    ManifestError,
    PromotionPlan,
    diff_lines,
    manifest_files,
    plan_campaign,
    read_manifests,
)

app = typer.Typer(no_args_is_help=True, help="Campaigns as code: YAML manifests, a diff, an apply.")
Files = Annotated[
    list[Path],
    typer.Option("--file", "-f", exists=True, help="a manifest, or a directory of *.yaml manifests"),
]
PAGE = 500


async def keyed_campaigns(admin: Admin) -> dict[str, campaign_pb2.Campaign]:
    """The tenant's campaigns that carry a manifest key (archived ones aside), by key."""
    found: dict[str, campaign_pb2.Campaign] = {}
    token = ""
    while True:
        page = await admin.call(
            admin.promotion.ListCampaigns, api.ListCampaignsRequest(page_size=PAGE, page_token=token)
        )
        found |= {c.labels[KEY_LABEL]: c for c in page.campaigns if KEY_LABEL in c.labels}
        token = page.next_page_token
        if not token:
            return found


async def campaign_id_of(admin: Admin, reference: str) -> str:
    """A campaign id given as itself or as a manifest key."""
    try:
        return str(uuid.UUID(reference))
    except ValueError:
        pass
    page = await admin.call(
        admin.promotion.ListCampaigns, api.ListCampaignsRequest(page_size=2, labels={KEY_LABEL: reference})
    )
    if len(page.campaigns) != 1:
        console.print(f"[red]no campaign has the key {escape(reference)!r}[/red]")
        raise typer.Exit(1)
    return page.campaigns[0].campaign_id


async def _promotions_of(admin: Admin, campaign_id: str) -> list[promotion_pb2.Promotion]:
    promotions: list[promotion_pb2.Promotion] = []
    token = ""
    while True:
        page = await admin.call(
            admin.promotion.ListPromotions,
            api.ListPromotionsRequest(campaign_id=campaign_id, page_size=PAGE, page_token=token),
        )
        promotions += page.promotions
        token = page.next_page_token
        if not token:
            return promotions


async def _plans(admin: Admin, manifests: list[CampaignManifest]) -> list[CampaignPlan]:
    current = await keyed_campaigns(admin)
    plans = []
    for manifest in manifests:
        campaign = current.get(manifest.key)
        promotions = await _promotions_of(admin, campaign.campaign_id) if campaign else []
        plans.append(plan_campaign(manifest, campaign, promotions))
    return plans


def _key() -> str:
    return uuid.uuid4().hex


async def _apply_promotion(admin: Admin, campaign_id: str, plan: PromotionPlan) -> None:
    promotion = admin.promotion
    if plan.action == "create":
        desired = promotion_pb2.Promotion()
        desired.CopyFrom(plan.desired)
        desired.campaign_id = campaign_id
        await admin.call(
            promotion.CreatePromotion, api.CreatePromotionRequest(idempotency_key=_key(), promotion=desired)
        )
    elif plan.action == "update":
        desired = promotion_pb2.Promotion()
        desired.CopyFrom(plan.desired)
        desired.promotion_id, desired.etag = plan.current.promotion_id, plan.current.etag
        mask = field_mask_pb2.FieldMask(paths=[c.field for c in plan.changes])
        await admin.call(
            promotion.UpdatePromotion,
            api.UpdatePromotionRequest(idempotency_key=_key(), promotion=desired, update_mask=mask),
        )
    elif plan.action == "delete":
        request = api.DeletePromotionRequest(
            idempotency_key=_key(), promotion_id=plan.current.promotion_id, etag=plan.current.etag
        )
        await admin.call(promotion.DeletePromotion, request)
    elif plan.action == "disable":
        disabled = promotion_pb2.Promotion(
            promotion_id=plan.current.promotion_id,
            etag=plan.current.etag,
            state=promotion_pb2.PROMOTION_STATE_DISABLED,
        )
        mask = field_mask_pb2.FieldMask(paths=["state"])
        await admin.call(
            promotion.UpdatePromotion,
            api.UpdatePromotionRequest(idempotency_key=_key(), promotion=disabled, update_mask=mask),
        )


async def _apply_campaign(admin: Admin, plan: CampaignPlan) -> None:
    desired = plan.manifest.campaign
    if plan.action == "create":
        request = api.CreateCampaignRequest(idempotency_key=_key(), campaign=desired)
        campaign_id = (await admin.call(admin.promotion.CreateCampaign, request)).campaign.campaign_id
    else:
        campaign_id = plan.current.campaign_id
    if plan.action == "update":
        changed = campaign_pb2.Campaign()
        changed.CopyFrom(desired)
        changed.campaign_id, changed.etag = campaign_id, plan.current.etag
        mask = field_mask_pb2.FieldMask(paths=[c.field for c in plan.changes])
        await admin.call(
            admin.promotion.UpdateCampaign,
            api.UpdateCampaignRequest(idempotency_key=_key(), campaign=changed, update_mask=mask),
        )
    for promotion in plan.promotions:
        await _apply_promotion(admin, campaign_id, promotion)
    if plan.transition == "activate":
        request = api.ActivateCampaignRequest(idempotency_key=_key(), campaign_id=campaign_id)
        await admin.call(admin.promotion.ActivateCampaign, request)
    elif plan.transition == "pause":
        request = api.PauseCampaignRequest(idempotency_key=_key(), campaign_id=campaign_id)
        await admin.call(admin.promotion.PauseCampaign, request)


def _read(files: list[Path]) -> list[CampaignManifest]:
    try:
        return read_manifests(manifest_files(files))
    except ManifestError as error:
        console.print(f"[red]{escape(str(error))}[/red]\nnothing applied")
        raise typer.Exit(2) from None


def _show(plans: list[CampaignPlan]) -> int:
    """Prints the diff; the number of campaigns that change."""
    for plan in plans:
        for line in diff_lines(plan):
            style = {"+": "green", "-": "red", "~": "yellow"}.get(line[:1], "dim")
            console.print(f"[{style}]{escape(line)}[/{style}]")
    changing = sum(plan.changed for plan in plans)
    console.print(f"{changing} of {len(plans)} campaigns change")
    return changing


def _planned(ctx: typer.Context, files: list[Path]) -> list[CampaignPlan]:
    manifests = _read(files)

    async def plan(admin: Admin) -> list[CampaignPlan]:
        try:
            return await _plans(admin, manifests)
        except ManifestError as error:
            console.print(f"[red]{escape(str(error))}[/red]\nnothing applied")
            raise typer.Exit(2) from None

    return run(ctx.obj, plan)


@app.command()
def diff(ctx: typer.Context, files: Files) -> None:
    """Show what apply would change, changing nothing."""
    _show(_planned(ctx, files))


@app.command()
def apply(
    ctx: typer.Context,
    files: Files,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="apply without asking")] = False,
) -> None:
    """Show the diff, ask, then create and update the campaigns and promotions to match the files."""
    plans = _planned(ctx, files)
    if not _show(plans):
        return
    if not yes:
        typer.confirm("Apply these changes?", abort=True, err=True)

    async def apply_all(admin: Admin) -> None:
        for plan in plans:
            if plan.changed:
                await _apply_campaign(admin, plan)
                console.print(f"applied {plan.manifest.key}")

    run(ctx.obj, apply_all)


@app.command("list")
def list_campaigns(ctx: typer.Context) -> None:
    """The campaigns kept as manifests: key, id, type, state."""

    async def listed(admin: Admin) -> dict[str, campaign_pb2.Campaign]:
        return await keyed_campaigns(admin)

    table = Table("key", Column("id", no_wrap=True, min_width=36), "type", "state", "name")
    for key, campaign in sorted(run(ctx.obj, listed).items()):
        kind = campaign_pb2.CampaignType.Name(campaign.type).removeprefix("CAMPAIGN_TYPE_").lower()
        state = campaign_pb2.CampaignState.Name(campaign.state).removeprefix("CAMPAIGN_STATE_").lower()
        table.add_row(key, campaign.campaign_id, kind, state, campaign.display_name)
    print_table(table)
