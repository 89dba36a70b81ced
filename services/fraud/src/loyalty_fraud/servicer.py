"""FraudService: each method decodes its request into a command, runs one use case in a unit of work
(`units.idempotent` for the admin's changes; assessments are idempotent on their own key, see app.py),
and encodes the result. No SQL, no business rule, no transaction of its own.

The runtime's call guard has already authenticated the caller and validated the request against the
contract (lengths, control characters, enums, time ranges) before a method runs.
"""

from datetime import datetime

from loyalty.fraud.v1 import fraud_service_pb2 as api, review_pb2
from loyalty_fraud import app, encoding
from loyalty_fraud.cache import ConfigCache
from loyalty_fraud.counters import Counters
from loyalty_runtime import paging
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.protobuf import moment
from loyalty_runtime.uow import UnitsOfWork

CASE_STATE_NAMES = {number: name for name, number in app.CASE_STATES.items()}


def _after_moment(token: str) -> tuple[datetime, str] | None:
    """A page token of (time, id) as this service issues them."""
    last = paging.decode_token(token)
    if not last:
        return None
    at, _, item_id = last.partition("|")
    try:
        return datetime.fromisoformat(at), item_id
    except ValueError:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
        ) from None


def _moment_token(at: datetime, item_id: str) -> str:
    return paging.encode_token(f"{at.isoformat()}|{item_id}")


def _page(items: list, limit: int) -> tuple[list, bool]:
    return items[:limit], len(items) > limit


class FraudServicer:
    def __init__(self, units: UnitsOfWork, counters: Counters, configs: ConfigCache) -> None:
        self.units = units
        self.counters = counters
        self.configs = configs

    async def _config_changed(self, response):
        """This replica reads its own change at once; the others within the cache's check interval."""
        async with self.units.read() as uow:
            await app.config_changed(uow, self.configs)
        return response

    # --- assessments ---

    async def _assess(self, action, request):
        command = app.Assess(action, encoding.fingerprint(request), request.dry_run)
        # Every write of an assessment is one statement (app.py): no transaction to open.
        async with self.units.read() as uow:
            return await app.assess(uow, self.counters, self.configs, command)

    async def AssessCheckout(self, request: api.AssessCheckoutRequest, context) -> api.AssessCheckoutResponse:
        assessment = await self._assess(encoding.checkout_action(request), request)
        return api.AssessCheckoutResponse(assessment=assessment)

    async def AssessRedemption(
        self, request: api.AssessRedemptionRequest, context
    ) -> api.AssessRedemptionResponse:
        assessment = await self._assess(encoding.redemption_action(request), request)
        return api.AssessRedemptionResponse(assessment=assessment)

    async def AssessEarn(self, request: api.AssessEarnRequest, context) -> api.AssessEarnResponse:
        assessment = await self._assess(encoding.earn_action(request), request)
        return api.AssessEarnResponse(assessment=assessment)

    async def AssessReturn(self, request: api.AssessReturnRequest, context) -> api.AssessReturnResponse:
        assessment = await self._assess(encoding.return_action(request), request)
        return api.AssessReturnResponse(assessment=assessment)

    async def AssessReferral(self, request: api.AssessReferralRequest, context) -> api.AssessReferralResponse:
        assessment = await self._assess(encoding.referral_action(request), request)
        return api.AssessReferralResponse(assessment=assessment)

    async def AssessEnrolment(
        self, request: api.AssessEnrolmentRequest, context
    ) -> api.AssessEnrolmentResponse:
        assessment = await self._assess(encoding.enrolment_action(request), request)
        return api.AssessEnrolmentResponse(assessment=assessment)

    async def GetAssessment(self, request: api.GetAssessmentRequest, context) -> api.GetAssessmentResponse:
        async with self.units.read() as uow:
            return api.GetAssessmentResponse(assessment=await app.get_assessment(uow, request.assessment_id))

    async def ListAssessments(
        self, request: api.ListAssessmentsRequest, context
    ) -> api.ListAssessmentsResponse:
        limit = paging.page_size(request.page_size, default=100, maximum=1000)
        command = app.ListAssessments(
            customer_id=request.customer_id,
            kind=encoding.KINDS.decode_or(request.kind, None),
            decision=encoding.DECISIONS.decode_or(request.decision, None),
            start=moment(request, "start_time"),
            end=moment(request, "end_time"),
            before=_after_moment(request.page_token),
            limit=limit,
        )
        async with self.units.read() as uow:
            rows, more = _page(await app.list_assessments(uow, command), limit)
        response = api.ListAssessmentsResponse()
        for row in rows:
            response.assessments.add().MergeFromString(row["body"])
        if more:
            response.next_page_token = _moment_token(rows[-1]["created_at"], rows[-1]["assessment_id"])
        return response

    # --- rules and settings ---

    async def CreateRule(self, request: api.CreateRuleRequest, context) -> api.CreateRuleResponse:
        return await self._config_changed(
            await self.units.idempotent(
                request, app.create_rule, request.rule, lambda rule: api.CreateRuleResponse(rule=rule)
            )
        )

    async def GetRule(self, request: api.GetRuleRequest, context) -> api.GetRuleResponse:
        async with self.units.read() as uow:
            return api.GetRuleResponse(rule=await app.get_rule(uow, request.rule_id))

    async def ListRules(self, request: api.ListRulesRequest, context) -> api.ListRulesResponse:
        limit = paging.page_size(request.page_size, default=50, maximum=500)
        state = encoding.RULE_STATES.decode_or(request.state, None)
        async with self.units.read() as uow:
            rules, more = _page(
                await app.list_rules(uow, state, paging.decode_token(request.page_token), limit), limit
            )
        token = paging.encode_token(rules[-1].rule_id) if more else ""
        return api.ListRulesResponse(rules=rules, next_page_token=token)

    async def UpdateRule(self, request: api.UpdateRuleRequest, context) -> api.UpdateRuleResponse:
        command = app.UpdateRule(request.rule, tuple(request.update_mask.paths))
        return await self._config_changed(
            await self.units.idempotent(
                request, app.update_rule, command, lambda rule: api.UpdateRuleResponse(rule=rule)
            )
        )

    async def DeleteRule(self, request: api.DeleteRuleRequest, context) -> api.DeleteRuleResponse:
        async def delete(uow, _):
            await app.delete_rule(uow, request.rule_id, request.etag)

        return await self._config_changed(
            await self.units.idempotent(request, delete, None, lambda _: api.DeleteRuleResponse())
        )

    async def GetFraudSettings(
        self, request: api.GetFraudSettingsRequest, context
    ) -> api.GetFraudSettingsResponse:
        async with self.units.read() as uow:
            return api.GetFraudSettingsResponse(settings=await app.get_settings(uow))

    async def UpdateFraudSettings(
        self, request: api.UpdateFraudSettingsRequest, context
    ) -> api.UpdateFraudSettingsResponse:
        command = app.UpdateSettings(request.settings, tuple(request.update_mask.paths))
        return await self._config_changed(
            await self.units.idempotent(
                request, app.update_settings, command, lambda s: api.UpdateFraudSettingsResponse(settings=s)
            )
        )

    async def GetBruteForcePolicy(
        self, request: api.GetBruteForcePolicyRequest, context
    ) -> api.GetBruteForcePolicyResponse:
        async with self.units.read() as uow:
            policy, etag = await app.brute_force_policy(uow, self.configs)
        return api.GetBruteForcePolicyResponse(policy=policy, etag=etag)

    # --- blocklist ---

    async def CreateBlocklistEntry(
        self, request: api.CreateBlocklistEntryRequest, context
    ) -> api.CreateBlocklistEntryResponse:
        return await self.units.idempotent(
            request, app.create_entry, request.entry, lambda e: api.CreateBlocklistEntryResponse(entry=e)
        )

    async def GetBlocklistEntry(
        self, request: api.GetBlocklistEntryRequest, context
    ) -> api.GetBlocklistEntryResponse:
        async with self.units.read() as uow:
            return api.GetBlocklistEntryResponse(entry=await app.get_entry(uow, request.entry_id))

    async def ListCodeLockouts(
        self, request: api.ListCodeLockoutsRequest, context
    ) -> api.ListCodeLockoutsResponse:
        limit = paging.page_size(request.page_size, default=100, maximum=1000)
        key = app.LOCKOUT_KEY_NAMES.get(request.key) if request.key else None
        if request.key and key is None:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "a terminal, device, customer or IP key", field="key"
            )
        token = paging.decode_token(request.page_token)
        if token and not token.isdigit():
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "not a page token of this list", field="page_token"
            )
        command = app.ListLockouts(key, request.value, int(token) if token else None, limit)
        async with self.units.read() as uow:
            found, more = _page(await app.list_lockouts(uow, command), limit)
        return api.ListCodeLockoutsResponse(
            lockouts=[lockout for _, lockout in found],
            next_page_token=paging.encode_token(str(found[-1][0])) if more else "",
        )

    async def ListBlocklistEntries(
        self, request: api.ListBlocklistEntriesRequest, context
    ) -> api.ListBlocklistEntriesResponse:
        limit = paging.page_size(request.page_size, default=100, maximum=1000)
        command = app.ListEntries(
            encoding.BLOCKLIST_TYPES.decode_or(request.type, None),
            request.value,
            request.show_expired,
            paging.decode_token(request.page_token),
            limit,
        )
        async with self.units.read() as uow:
            entries, more = _page(await app.list_entries(uow, command), limit)
        token = paging.encode_token(entries[-1].entry_id) if more else ""
        return api.ListBlocklistEntriesResponse(entries=entries, next_page_token=token)

    async def UpdateBlocklistEntry(
        self, request: api.UpdateBlocklistEntryRequest, context
    ) -> api.UpdateBlocklistEntryResponse:
        command = app.UpdateEntry(request.entry, tuple(request.update_mask.paths))
        return await self.units.idempotent(
            request, app.update_entry, command, lambda e: api.UpdateBlocklistEntryResponse(entry=e)
        )

    async def DeleteBlocklistEntry(
        self, request: api.DeleteBlocklistEntryRequest, context
    ) -> api.DeleteBlocklistEntryResponse:
        async def delete(uow, entry_id):
            await app.delete_entry(uow, entry_id)

        return await self.units.idempotent(
            request, delete, request.entry_id, lambda _: api.DeleteBlocklistEntryResponse()
        )

    # --- review cases ---

    async def GetReviewCase(self, request: api.GetReviewCaseRequest, context) -> api.GetReviewCaseResponse:
        async with self.units.read() as uow:
            return api.GetReviewCaseResponse(review_case=await app.get_case(uow, request.review_case_id))

    async def ListReviewCases(
        self, request: api.ListReviewCasesRequest, context
    ) -> api.ListReviewCasesResponse:
        limit = paging.page_size(request.page_size, default=50, maximum=500)
        command = app.ListCases(
            CASE_STATE_NAMES.get(request.state),
            request.customer_id,
            request.assignee,
            _after_moment(request.page_token),
            limit,
        )
        async with self.units.read() as uow:
            found, more = _page(await app.list_cases(uow, command), limit)
        response = api.ListReviewCasesResponse(review_cases=[case for _, case in found])
        if more:
            last = found[-1][0]
            response.next_page_token = _moment_token(last["created_at"], last["review_case_id"])
        return response

    async def AssignReviewCase(
        self, request: api.AssignReviewCaseRequest, context
    ) -> api.AssignReviewCaseResponse:
        command = app.AssignCase(request.review_case_id, request.assignee)
        return await self.units.idempotent(
            request, app.assign_case, command, lambda case: api.AssignReviewCaseResponse(review_case=case)
        )

    async def ResolveReviewCase(
        self, request: api.ResolveReviewCaseRequest, context
    ) -> api.ResolveReviewCaseResponse:
        if request.resolution not in (
            review_pb2.REVIEW_CASE_STATE_APPROVED,
            review_pb2.REVIEW_CASE_STATE_REJECTED,
        ):
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "resolution is APPROVED or REJECTED", field="resolution"
            )
        command = app.ResolveCase(
            request.review_case_id,
            CASE_STATE_NAMES[request.resolution],
            request.note,
            request.blocklist_customer,
        )
        return await self.units.idempotent(
            request,
            app.resolve_case,
            command,
            lambda r: api.ResolveReviewCaseResponse(review_case=r.case, blocklist_entry=r.entry),
        )
