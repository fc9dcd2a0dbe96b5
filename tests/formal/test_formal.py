"""Formal proofs of the link layer, the engine's addresses, the command processor and the
resident memory commands (docs/formal.md), with SymbiYosys from PyPI.

Each property set is proved (k-induction, or bounded model checking where induction does not
close), and a deliberately broken variant of its block (a Yosys mutation of one wire) must give a
counterexample that fails an assertion of that same set: a property that cannot fail, or a
harness whose checks never run, fails here.
"""

from dataclasses import dataclass

import pytest

from psconv.hw import (address_generator_properties, command_processor_properties,
                       framing_properties, memory_commands_properties)
from psconv.rtl_gen.formal import check

pytestmark = pytest.mark.formal


@dataclass(frozen=True)
class Proof:
    harness: object        # () -> elaboratable
    mode: str              # "prove" (k-induction) or "bmc"
    depth: int
    mutation: tuple        # Yosys commands that break the block
    broken_depth: int      # BMC depth that finds the broken block's counterexample (0: the
                           # induction step of the proof fails instead, see the test)

    @property
    def sources(self) -> tuple:
        """The files its assertions are written in: the harness's module, and the reply
        contract both command processors' harnesses share."""
        shared = command_processor_properties.assert_one_reply_per_command.__module__
        return tuple(module.rsplit(".", 1)[-1] + ".py"
                     for module in {self.harness.__module__, shared})


PROOFS = {
    "link_bad_crc_never_delivered": Proof(
        framing_properties.bad_crc_harness, "prove", 20,
        # the receiver compares only the CRC's high byte
        ("setattr -unset init w:link.receiver.crc_lo",
         "connect -set link.receiver.crc_lo link.receiver.crc[7:0]"), 24),
    "link_repeated_seq_never_applied_twice": Proof(
        framing_properties.repeated_seq_harness, "bmc", 30,
        ("connect -set link.stored_valid 1'0",), 30),          # no reply is ever stored
    "link_one_reply_per_frame": Proof(
        framing_properties.one_reply_harness, "bmc", 30,
        ("connect -set link.receiver.error__ready 1'1",), 30),  # errors taken while busy
    "address_generator_patch_bounds": Proof(
        address_generator_properties.address_generator_harness, "prove", 4,
        ("connect -set ag.pass_limit 2'b11",), 0),              # pass limit one too high
    "sequencer_weight_bounds": Proof(
        address_generator_properties.sequencer_harness, "bmc", 20,
        ("connect -set seq.last 1'0",), 20),                    # never ends an output channel
    "command_processor_replies": Proof(
        command_processor_properties.command_processor_harness, "bmc", 20,
        ("connect -set cp.reply_kind 2'b10",), 20),             # every reply sends a blob
    "command_processor_prompt_reply": Proof(
        command_processor_properties.prompt_reply_harness, "prove", 12,
        ("connect -set cp.reply__valid 1'0",), 20),             # never offers a reply
    "command_processor_data_reply": Proof(
        command_processor_properties.data_reply_harness, "bmc", 45,
        ("connect -set cp.final_beat 1'0",), 45),               # a data write never ends
    "memory_commands_store_bounds": Proof(
        memory_commands_properties.memory_bounds_harness, "bmc", 20,
        # WRITE_MEM while the runner runs is taken wherever it lies
        ("connect -set mc.input_writable 1'1",), 20),
    "memory_commands_replies": Proof(
        memory_commands_properties.memory_replies_harness, "bmc", 20,
        ("connect -set mc.reply_length 16'd2",), 20),           # every reply claims 2 bytes
    "memory_commands_data_reply": Proof(
        memory_commands_properties.memory_data_reply_harness, "bmc", 30,
        ("connect -set mc.memory__request__valid 1'0",), 30),   # never issues a load or store
    "memory_commands_prompt_reply": Proof(
        memory_commands_properties.memory_prompt_reply_harness, "prove", 18,
        ("connect -set mc.reply__valid 1'0",), 20),             # never offers a reply
}


def _report(result):
    """One line for ``pytest -s`` (the figures in docs/formal.md)."""
    print(f"\n{result.name}: {result.status} ({result.mode} depth {result.depth}) "
          f"{result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU")


@pytest.mark.parametrize("name", sorted(PROOFS))
def test_property_holds(name, tmp_path):
    proof = PROOFS[name]
    result = check(proof.harness(), name, mode=proof.mode, depth=proof.depth, workdir=tmp_path)
    _report(result)
    assert result.passed, f"{name}: {result.status}\n{result.log}"


@pytest.mark.parametrize("name", sorted(PROOFS))
def test_broken_variant_fails(name, tmp_path):
    """The broken block fails one of the set's assertions: a BMC counterexample from reset, or,
    where that lies deeper than a test can afford (the address generator's setup takes ~40
    cycles), the proof's own induction step fails on the mutated logic that passes unmutated."""
    proof = PROOFS[name]
    if proof.broken_depth:
        result = check(proof.harness(), name, mode="bmc", depth=proof.broken_depth,
                       mutations=proof.mutation, workdir=tmp_path)
        assert result.status == "FAIL", f"{name} broken: {result.status}\n{result.log}"
    else:
        result = check(proof.harness(), name, mode=proof.mode, depth=proof.depth,
                       mutations=proof.mutation, workdir=tmp_path)
        assert result.status in ("FAIL", "UNKNOWN"), f"{name} broken: {result.status}\n{result.log}"
    _report(result)
    failed = [line for line in result.log.splitlines() if "failed assertion" in line]
    assert failed and all(any(source in line for source in proof.sources)
                          for line in failed), result.log
