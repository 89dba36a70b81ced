"""The calls triggers make to other services: segmentation (a customer's segments and lifetime
metrics for conditions; static segments for actions) and notification (templates, messages).
One per server, its channels opened on first use and closed when the server stops."""

import grpc

from loyalty.notification.v1 import notification_service_pb2_grpc
from loyalty.segmentation.v1 import segmentation_service_pb2_grpc
from loyalty_runtime.clients import internal_channel
from loyalty_runtime.errors import Reason, Unavailable


class TriggerLinks:
    def __init__(self, settings, tracer_provider=None) -> None:
        self._settings = settings
        self._tracer_provider = tracer_provider
        self._channels: list[grpc.aio.Channel] = []
        self._segmentation: segmentation_service_pb2_grpc.SegmentationServiceStub | None = None
        self._notification: notification_service_pb2_grpc.NotificationServiceStub | None = None

    def _channel(self, target: str) -> grpc.aio.Channel:
        opened = internal_channel(
            target,
            internal_token=self._settings.internal_token.get_secret_value(),
            tracer_provider=self._tracer_provider,
            default_timeout=self._settings.trigger_call_seconds,
        )
        self._channels.append(opened)
        return opened

    @property
    def segmentation(self) -> segmentation_service_pb2_grpc.SegmentationServiceStub:
        if self._segmentation is None:
            channel = self._channel(self._settings.segmentation_target)
            self._segmentation = segmentation_service_pb2_grpc.SegmentationServiceStub(channel)
        return self._segmentation

    @property
    def notification(self) -> notification_service_pb2_grpc.NotificationServiceStub:
        if self._notification is None:
            channel = self._channel(self._settings.notification_target)
            self._notification = notification_service_pb2_grpc.NotificationServiceStub(channel)
        return self._notification

    async def close(self) -> None:
        channels, self._channels = self._channels, []
        self._segmentation = self._notification = None
        for channel in channels:
            await channel.close()


async def call(rpc, request, *, missing_ok: bool = False):
    """`rpc(request)`; NOT_FOUND is None when `missing_ok`, other failures are UNAVAILABLE
    (the event or job is retried: a downstream outage must not drop a reward)."""
    try:
        return await rpc(request)
    except grpc.aio.AioRpcError as error:
        if missing_ok and error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise Unavailable(
            Reason.UNAVAILABLE,
            f"{type(request).__name__.removesuffix('Request')} failed: {error.code().name}",
        ) from None
