"""The engine's channel registry (spec/protocol.md section 6): which channels exist, their access
keys and buffer sizes, which of their two ends has been attached, and the sweep of abandoned ones.

What a channel carries is the shell's business: it holds each channel's bounded queue of frames
and the two data sockets, and asks this registry before it opens or attaches anything. The
registry decides:

- :meth:`ChannelRegistry.create` (``engine::channels::create``): a fresh id and access key
  (UUIDv4 both), and the buffer size, clamped to 1..1024 frames (64 when not given);
- :meth:`ChannelRegistry.lookup`: the upgrade check: the channel exists and the key matches
  (otherwise the engine answers 404 ``Channel not found``);
- :meth:`ChannelRegistry.attach`: each end attaches once; a second attach is refused (the shell
  then closes that socket at once, as the engine does);
- the sweep: every 60 s, channels older than 5 minutes with an end never attached are removed,
  and :class:`ChannelDropped` tells the shell to release whatever it holds for them. A channel
  whose two ends were both attached is never swept, and its entry stays, as in the engine (an
  attach after it ended still finds it, and is refused as a second attach).

Channels belong to nobody: a worker's disconnect leaves them alone (section 6.6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

import attrs

from ..._protocol._messages import JSON
from ._model import ChannelDropped, Output
from ._timers import Timer

__all__ = [
    "CHANNEL_TTL",
    "DEFAULT_BUFFER_SIZE",
    "MAX_BUFFER_SIZE",
    "SWEEP_INTERVAL",
    "ChannelRegistry",
    "StreamChannel",
]

#: Frames queued between a channel's two sockets when ``buffer_size`` is not given.
DEFAULT_BUFFER_SIZE: Final = 64
#: The largest ``buffer_size``; larger ones are clamped to it.
MAX_BUFFER_SIZE: Final = 1024
#: Age (seconds) past which a channel with an end never attached is swept.
CHANNEL_TTL: Final = 5 * 60.0
#: Seconds between sweeps.
SWEEP_INTERVAL: Final = 60.0


@attrs.define(eq=False)
class StreamChannel:
    """One channel: its id, its access key, its queue's size and which ends are attached."""

    id: str
    access_key: str = attrs.field(repr=False)
    buffer_size: int
    created_at: float
    writer_attached: bool = False
    reader_attached: bool = False

    def ref(self, direction: Literal["read", "write"]) -> dict[str, JSON]:
        """The ``StreamChannelRef`` of one end, as ``engine::channels::create`` returns it."""
        return {"channel_id": self.id, "access_key": self.access_key, "direction": direction}


def clamp_buffer_size(requested: int | None) -> int:
    """The queue size the engine uses for a requested ``buffer_size`` (section 6.1)."""
    size = DEFAULT_BUFFER_SIZE if requested is None else requested
    return max(1, min(size, MAX_BUFFER_SIZE))


class ChannelRegistry:
    """Every channel the engine knows; see the module docstring.

    Args:
        new_id: a fresh UUIDv4 string for each channel id and access key.
        arm: the core's timer (:meth:`EngineState.arm`), for the sweep.
    """

    def __init__(
        self,
        new_id: Callable[[], str],
        arm: Callable[[float, Callable[[float, list[Output]], None], list[Output]], Timer],
    ) -> None:
        self._new_id = new_id
        self._arm = arm
        self._channels: dict[str, StreamChannel] = {}
        self._sweep: Timer | None = None

    def __len__(self) -> int:
        return len(self._channels)

    def create(self, buffer_size: int | None, now: float, out: list[Output]) -> StreamChannel:
        """A new channel with a clamped ``buffer_size``; arms the sweep if none is due."""
        channel = StreamChannel(
            id=self._new_id(),
            access_key=self._new_id(),
            buffer_size=clamp_buffer_size(buffer_size),
            created_at=now,
        )
        self._channels[channel.id] = channel
        if self._sweep is None:
            self._sweep = self._arm(now + SWEEP_INTERVAL, self._run_sweep, out)
        return channel

    def lookup(self, channel_id: str, access_key: str) -> StreamChannel | None:
        """The channel, if it exists and ``access_key`` is its key."""
        channel = self._channels.get(channel_id)
        if channel is None or channel.access_key != access_key:
            return None
        return channel

    def attach(
        self, channel_id: str, access_key: str, direction: Literal["read", "write"]
    ) -> StreamChannel | None:
        """Attach one end: the channel, or ``None`` when it is gone, the key is wrong or that
        end was attached already (each end attaches once, whoever holds the ref)."""
        channel = self.lookup(channel_id, access_key)
        if channel is None:
            return None
        if direction == "write":
            if channel.writer_attached:
                return None
            channel.writer_attached = True
        else:
            if channel.reader_attached:
                return None
            channel.reader_attached = True
        return channel

    def discard(self, channel_id: str) -> None:
        """Forget a channel at once (the engine's REST API does with a request's two channels
        once its response is decided: ends already attached go on working, a late attach finds
        no channel)."""
        self._channels.pop(channel_id, None)

    def _run_sweep(self, now: float, out: list[Output]) -> None:
        self._sweep = None
        waiting = False
        for channel in list(self._channels.values()):
            if channel.writer_attached and channel.reader_attached:
                continue
            if now - channel.created_at > CHANNEL_TTL:
                del self._channels[channel.id]
                out.append(ChannelDropped(channel.id))
            else:
                waiting = True
        # Only channels with an end still to attach can be swept: with none left, the sweep
        # sleeps until the next channel is created instead of waking every minute.
        if waiting:
            self._sweep = self._arm(now + SWEEP_INTERVAL, self._run_sweep, out)
