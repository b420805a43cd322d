"""What the fleet link keeps in ``$ROOMBOX_HOME`` across restarts: its retained topics and the desired config
it applied last.

:class:`RetainedTopics`: in ``mqtt-retained.json``, the retained topics the box publishes. After ``box_id``,
``topic_prefix`` or ``ha_prefix`` changed (at a restart), it clears (empty retained messages) the topics of
the id it ran under before: availability, status, ack and the Home Assistant discovery entries, so no ghost
box is left behind; unless that old id's availability says ``online``, i.e. another box runs under it now
(ids swapped between two boxes): then its topics are left to it. The fleet's own retained ``config/set``
messages are the fleet's and are not touched.

:class:`AppliedDesired`: in ``mqtt-desired.sha256``, the hash of the last desired message applied, so that
the same message again (a retained one, at each connection and each start) is acknowledged
``"applied_before": true`` and not applied over a change made locally since.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import aiomqtt

from common.atomic import write_atomic

# the fleet link's own log, under which these lines were always written (and are filtered and looked for)
log = logging.getLogger("appliance.control.mqtt")

RETAINED_FILE = "mqtt-retained.json"
APPLIED_FILE = "mqtt-desired.sha256"


class RetainedTopics:
    """The retained topics published under this box's id and under the ids it ran under before, kept in
    ``path`` (None: nothing kept, nothing cleared). ``ours`` tells the topics of the id the box runs under
    now; ``availability`` is that id's availability topic."""

    def __init__(self, path: Path | None, availability: str, ours: Callable[[str], bool]) -> None:
        self.path = path
        self.availability = availability
        self.published: set[str] = set()
        self.own_stale: set[str] = set()  # recorded under this id, published no more (ha_prefix changed)
        self.old_ids: dict[str, set[str]] = {}  # an old id's availability topic -> its retained topics
        self._load(ours)

    def _load(self, ours: Callable[[str], bool]) -> None:
        if self.path is None:
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("mqtt: cannot read %s (%s): the topics of an earlier box_id are not cleared", self.path, e)
            return
        entries = doc.get("ids") if isinstance(doc, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            availability = entry.get("availability") if isinstance(entry, dict) else None
            topics = entry.get("topics") if isinstance(entry, dict) else None
            if not isinstance(availability, str) or not isinstance(topics, list):
                continue
            for topic in topics:
                if not isinstance(topic, str) or not topic or any(c in topic for c in "+#\0"):
                    continue
                if ours(topic):
                    self.published.add(topic)
                elif availability == self.availability:
                    self.own_stale.add(topic)
                else:
                    self.old_ids.setdefault(availability, set()).add(topic)

    def record(self) -> None:
        if self.path is None:
            return
        ids = [{"availability": self.availability, "topics": sorted(self.published | self.own_stale)}]
        ids += [{"availability": a, "topics": sorted(t)} for a, t in sorted(self.old_ids.items())]
        try:
            write_atomic(self.path, json.dumps({"ids": ids}, indent=1) + "\n")
        except (OSError, ValueError) as e:
            log.warning("mqtt: cannot keep the retained topics in %s: %s", self.path, e)

    def note(self, topics: Iterable[str]) -> None:
        """Record ``topics`` before they are first published retained."""
        new = set(topics) - self.published
        if new:
            self.published |= new
            self.record()

    def stale(self) -> bool:
        """Whether there are topics to clear: ``clear_old`` is to run before the box says online."""
        return bool(self.old_ids or self.own_stale)

    async def clear_old(self, client: aiomqtt.Client, timeout_s: float) -> None:
        """Clear the retained topics of the ids this box ran under before, but not those of an id another box
        is online under now; then say online."""
        for topic in sorted(self.own_stale):
            await client.publish(topic, b"", qos=1, retain=True)
        if self.own_stale:
            log.info("mqtt: cleared %d retained topics this box published no more", len(self.own_stale))
            self.own_stale.clear()
            self.record()
        olds = sorted(self.old_ids)
        if not olds:
            await client.publish(self.availability, b"online", qos=1, retain=True)
            return
        online: set[str] = set()
        await client.subscribe([(a, 0) for a in olds] + [(self.availability, 0)])
        # the broker sends the retained messages at the subscription, before this box's own "online" comes back
        await client.publish(self.availability, b"online", qos=1, retain=True)
        try:
            async with asyncio.timeout(timeout_s):
                async for m in client.messages:
                    if m.topic.value == self.availability and not m.retain:
                        break
                    if m.topic.value in self.old_ids and m.payload == b"online":
                        online.add(m.topic.value)
        except TimeoutError:
            log.warning("mqtt: cannot tell whether another box uses %s; its topics are left for now", ", ".join(olds))
            return
        finally:
            await client.unsubscribe(olds)
        for availability in olds:
            topics = self.old_ids.pop(availability)
            if availability in online:
                log.warning(
                    "mqtt: another box is online under %s, which this box used before: its topics are left to it",
                    availability.rpartition("/")[0],
                )
            else:
                for topic in sorted(topics):
                    await client.publish(topic, b"", qos=1, retain=True)
                log.info(
                    "mqtt: cleared the %d retained topics of %s, which this box used before",
                    len(topics),
                    availability.rpartition("/")[0],
                )
            self.record()


class AppliedDesired:
    """The hash of the last desired message applied, kept in ``path`` (None: for this run only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.digest: str | None = None
        if path is not None:
            try:
                self.digest = path.read_text(encoding="ascii").strip() or None
            except (OSError, UnicodeDecodeError):
                self.digest = None

    def remember(self, digest: str) -> None:
        self.digest = digest
        if self.path is not None:
            try:
                write_atomic(self.path, digest + "\n")
            except (OSError, ValueError) as e:
                log.warning("mqtt: cannot keep the applied message's hash in %s: %s", self.path, e)
