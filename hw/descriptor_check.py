"""The layer descriptor's limits in gateware: the host's rules, generated, not copied.

:class:`DescriptorCheck` evaluates every rule of
:data:`psconv.protocol.descriptor.DESCRIPTOR_RULES` (the table :meth:`LayerSpec.check
<psconv.protocol.descriptor.LayerSpec.check>` reads) on a descriptor, so the board refuses
exactly the descriptors the host would. Each rule becomes comparators against constants of the
configuration (a range: two compares; a tuple: one equality per value); the one product rule
(``in_channels * in_height``) is the only multiplier, and a rule the earlier ones already imply
for the configuration (``implied``) is left out.

The verdict takes two cycles: the first registers every rule's value (the product out of its
multiplier, a MULT18X18D on the ULX3S), the second compares and picks the first broken rule. A
one-cycle verdict put the multiplier, its compare and the priority pick on one path, which kept
the ULX3S build at 51 MHz against its 60.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from psconv.protocol.descriptor import DESCRIPTOR_RULES, layer_descriptor_layout


def _admits(allowed, value):
    """The gateware for ``value in allowed`` (a range of step 1, or a tuple of values)."""
    if isinstance(allowed, range) and allowed.step == 1:
        return (value >= allowed.start) & (value <= allowed.stop - 1)
    return Cat(*(value == v for v in allowed)).any()


class DescriptorCheck(wiring.Component):
    """Ports: ``descriptor`` In(:func:`~psconv.protocol.descriptor.layer_descriptor_layout`);
    ``ok`` Out(1) and ``rule`` Out(8), registered: :attr:`LATENCY` cycles after ``descriptor``
    (held that long), ``ok`` is high when every rule holds, else ``rule`` is the index of the
    first broken rule in ``DESCRIPTOR_RULES`` (the second byte of the ``BAD_DESCRIPTOR`` NAK)."""

    LATENCY = 2

    def __init__(self, config):
        self.config = config
        super().__init__({
            "descriptor": In(layer_descriptor_layout(config)),
            "ok": Out(1),
            "rule": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        broken = []
        for rule in DESCRIPTOR_RULES:
            if rule.implied is not None and rule.implied(self.config):
                broken.append(Signal(name=f"breaks_{len(broken)}"))   # never: costs nothing
                continue
            raw_value = rule.value(self.descriptor)
            value = Signal.like(raw_value, name=f"value_{len(broken)}")
            m.d.sync += value.eq(raw_value)                 # stage 1: the rule's value
            fails = ~_admits(rule.allowed(self.config), value)
            if rule.applies is not None:
                applies = Signal(name=f"applies_{len(broken)}")
                m.d.sync += applies.eq(rule.applies(self.descriptor, self.config))
                fails = fails & applies
            bit = Signal(name=f"breaks_{len(broken)}")
            m.d.comb += bit.eq(fails)
            broken.append(bit)
        m.d.sync += self.ok.eq(~Cat(*broken).any())         # stage 2: the verdict
        # the first broken rule wins: assignments later in the list take priority, so go backwards
        for index in reversed(range(len(broken))):
            with m.If(broken[index]):
                m.d.sync += self.rule.eq(index)
        return m
