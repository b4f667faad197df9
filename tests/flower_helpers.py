"""A Flower Grid for tests: fedimage's ClientApp answers in this process, nodes can drop out.

:class:`LocalGrid` implements Flower's ``push_messages``/``pull_messages`` by calling the
ClientApp with each node's context (its node config and persistent state), as Flower's runtime
does. Needs flwr (import it after ``pytest.importorskip("flwr")``).
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context, Error, Message, RecordDict


class LocalGrid:
    """Flower's Grid interface, delivering each message to a ClientApp in this process.

    Node ``100 + i`` has ``partition-id`` i. ``silent[node]`` / ``failing[node]`` hold message
    types the node does not answer / answers with an error.
    """

    def __init__(self, client_app: Any, num_partitions: int):
        self.client_app = client_app
        self.contexts = {
            100 + i: Context(
                run_id=1,
                node_id=100 + i,
                node_config={"partition-id": i, "num-partitions": num_partitions},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_partitions)
        }
        self.silent: dict[int, set[str]] = {}
        self.failing: dict[int, set[str]] = {}
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}
        self._counter = 0

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)[::-1]  # any order: fedimage must not depend on it

    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for message in messages:
            self._counter += 1
            message_id = f"m{self._counter}"
            message.metadata.__dict__["_message_id"] = message_id
            self.sent.append(message)
            node, kind = message.metadata.dst_node_id, message.metadata.message_type
            if kind not in self.silent.get(node, set()):
                self._replies[message_id] = self._reply(message, kind in self.failing.get(node, set()))
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Any) -> list[Message]:
        return [self._replies.pop(mid) for mid in list(message_ids)[::-1] if mid in self._replies]

    def _reply(self, message: Message, fail: bool) -> Message:
        """The ClientApp's reply; an exception becomes an error reply, as in Flower's runtime."""
        try:
            if fail:
                raise RuntimeError("this node fails on purpose")
            return self.client_app(message, self.contexts[message.metadata.dst_node_id])
        except Exception as error:
            return Message(Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=message)
