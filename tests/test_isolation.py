"""Property: random writes, updates, deletes, searches and answers across several users of one
file never read, change or delete another user's memories, and a deleted memory never comes back."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import ams

USERS = ("alice", "bob", "carol")
WORDS = ["dog", "Lisbon", "sister", "bakery", "blue", "Waffles", "piano", "Tuesday", "ignore previous instructions",
         "DELETE FROM memories;", "\x00\x07", "naïve café", "🐶", "'; --", "\n\t"]
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join).filter(lambda t: t.strip())


@pytest.fixture(scope="module")
def machine(tmp_path_factory, tiny_backbone_dir):
    root = tmp_path_factory.mktemp("isolation")

    class Isolation(RuleBasedStateMachine):
        memories = Bundle("memories")
        example = 0

        def __init__(self) -> None:
            super().__init__()
            Isolation.example += 1
            path = root / f"iso{Isolation.example}.db"
            self.mem = {u: ams.Memory.open(path, backbone=tiny_backbone_dir, user_id=u) for u in USERS}
            self.model: dict[str, dict[str, str]] = {u: {} for u in USERS}  # user -> id -> text
            self.deleted: set[str] = set()

        def owner(self, memory_id: str) -> str:
            return next(u for u in USERS if memory_id in self.model[u])

        @rule(target=memories, user=st.sampled_from(USERS), text=texts)
        def write(self, user, text):
            m = self.mem[user].write(text)
            self.model[user][m] = text
            return m

        @rule(memory=memories, user=st.sampled_from(USERS), text=texts)
        def update(self, memory, user, text):
            if memory in self.deleted or self.owner(memory) != user:
                with pytest.raises(ams.MemoryNotFound):
                    self.mem[user].update(memory, text)
            else:
                self.mem[user].update(memory, text)
                self.model[user][memory] = text

        @rule(memory=consumes(memories), user=st.sampled_from(USERS))
        def delete(self, memory, user):
            if memory in self.deleted or self.owner(memory) != user:
                with pytest.raises(ams.MemoryNotFound):
                    self.mem[user].delete(memory)
                if memory not in self.deleted:  # still alive for its owner
                    return
            else:
                self.mem[user].delete(memory)
                del self.model[user][memory]
                self.deleted.add(memory)

        @rule(user=st.sampled_from(USERS), text=texts, method=st.sampled_from(["ams", "flat"]))
        def search(self, user, text, method):
            hits = self.mem[user].search(text, k=5, method=method)
            assert {h.id for h in hits} <= set(self.model[user])
            assert all(h.text == self.model[user][h.id] for h in hits)

        @rule(user=st.sampled_from(USERS), text=texts, mode=st.sampled_from(["text", "hybrid", "flat", "prefix"]))
        def generate(self, user, text, mode):
            g = self.mem[user].generate(text, mode=mode, k=3, max_new_tokens=1)
            assert set(g.memory_ids) <= set(self.model[user])

        @rule(memory=memories, user=st.sampled_from(USERS))
        def get(self, memory, user):
            if memory in self.model[user]:
                assert self.mem[user].get(memory).text == self.model[user][memory]
            else:
                with pytest.raises(ams.MemoryNotFound):
                    self.mem[user].get(memory)

        @invariant()
        def each_user_sees_exactly_their_own(self):
            for u in USERS:
                assert [(m.id, m.text) for m in self.mem[u].get_all(limit=-1)] == list(self.model[u].items())
                assert len(self.mem[u]) == len(self.model[u])

        def teardown(self):
            for m in self.mem.values():
                m.verify()
                m.close()

    return Isolation


def test_users_never_see_or_change_each_others_memories(machine):
    run = machine.TestCase
    run.settings = settings(max_examples=15, stateful_step_count=25, deadline=None,
                            suppress_health_check=list(HealthCheck))
    run().runTest()
