# amaranth: UnusedElaboratable=no
"""Guards of the board top in the Amaranth simulator: ABORT from the middle of a step, the
watchdog giving up on a silent host, and a host killed mid-layer whose successor recovers the
board (identify, abort, rerun) and gets the layer bit-exact. (Descriptor refusals on the
simulated board: tests/e2e/test_simulated_board.py; the checker against the host's rules:
tests/hw/test_hw_descriptor_check.py.)"""

import pytest
import torch

from psconv.errors import PsconvError
from psconv.families import paper_family
from psconv.firmware.driver import Driver
from psconv.firmware.link import LinkNak
from psconv.hw.board_top import BoardTop
from psconv.protocol.codes import Command, NakReason
from psconv.protocol.payloads import layer_payload, parse_counters, parse_status
from psconv.sim.amaranth_transport import SimulatorTransport
from psconv.sim.golden.network import describe_mismatch

from e2e_helpers import TINY_CONFIG, DyingHost, HostDied, make_step

CFG = TINY_CONFIG
WATCHDOG_CYCLES = 3000


def board(**options):
    top = BoardTop(CFG, 12_000_000, 3_000_000, bridge=True, timeout_cycles=400, **options)
    return SimulatorTransport(top, top.rx_data, top.tx_data)


def driver(transport, **options):
    return Driver(transport, CFG, timeout_s=5e-3, retries=2, **options)


@pytest.fixture(scope="module")
def step():
    g = torch.Generator().manual_seed(3)
    return make_step("3x3 PSD1_P4 residual relu", paper_family(1, 4, dense_kernel=True), 6, 5, 5,
                     g, residual=True)


def half_a_step(d, step):
    """WRITE_LAYER, START, the masks and part of the input map: the engine is left waiting."""
    step_, x, _, _ = step
    d.identify()
    d._request(Command.WRITE_LAYER, layer_payload(CFG, step_.descriptor))
    d._request(Command.START)
    d._request(Command.WRITE_MASKS, b"".join(m.to_bytes(2, "little") for m in step_.masks))


def run_bit_exact(d, step):
    step_, x, res, expected = step
    out, report = d._run_step(step_, x, res)
    assert describe_mismatch(step_.layer, expected, out) is None
    return report


def test_abort_returns_a_half_done_step_to_idle_and_the_next_step_is_bit_exact(step):
    transport = board(watchdog_cycles=0)
    d = driver(transport)
    half_a_step(d, step)
    assert d.status()["busy"] == 1
    d.abort()
    status = d.status()
    assert status["busy"] == 0 and status["output_beats"] == 0
    # the processor forgot the layer: nothing to start, nothing to read, no data taken
    for command, payload in ((Command.START, b""), (Command.READ_OUTPUT, b"\x10\x00"),
                             (Command.WRITE_FMAP, bytes(CFG.tn))):
        with pytest.raises(LinkNak) as e:
            d._request(command, payload)
        assert e.value.reason == NakReason.BAD_STATE
    assert parse_counters(d._request(Command.READ_COUNTERS).payload)["busy_cycles"] == 0
    # ABORT on an idle board is harmless, and one with a payload is refused
    d.abort()
    with pytest.raises(LinkNak) as e:
        d._request(Command.ABORT, b"\x00")
    assert e.value.reason == NakReason.BAD_LENGTH
    run_bit_exact(d, step)


def test_the_watchdog_abandons_a_step_whose_host_went_silent(step):
    transport = board(watchdog_cycles=WATCHDOG_CYCLES)
    d = driver(transport)
    half_a_step(d, step)
    transport.clock.sleep(WATCHDOG_CYCLES // 2 * 1e-6)     # silent, but not long enough
    assert d.status()["busy"] == 1
    transport.clock.sleep(WATCHDOG_CYCLES * 2 * 1e-6)      # long enough
    assert d.status()["busy"] == 0
    # a new host finds the board idle: no recovery needed
    successor = driver(transport)
    run_bit_exact(successor, step)
    assert successor.recoveries == 0
    # the watchdog leaves a live host alone: a whole step with it armed
    run_bit_exact(successor, step)


def test_a_host_killed_mid_layer_leaves_a_busy_board_its_successor_recovers(step):
    transport = board(watchdog_cycles=0)
    dying = driver(DyingHost(transport, bytes_left=300))
    with pytest.raises(HostDied):
        run_bit_exact(dying, step)
    # mid-layer: the engine waits for the rest of the layer, and no watchdog will give up
    successor = driver(transport)
    assert successor.status()["busy"] == 1
    report = run_bit_exact(successor, step)
    assert successor.recoveries == 1 and report.macs > 0
    # without recovery the BUSY is an error naming the command
    stubborn = driver(DyingHost(transport, bytes_left=300))
    with pytest.raises(HostDied):
        run_bit_exact(stubborn, step)
    with pytest.raises(LinkNak, match=r"WRITE_LAYER .*NAK BUSY") as e:
        run_bit_exact(driver(transport, recover=False), step)
    assert e.value.reason == NakReason.BUSY


def test_watchdog_period_is_checked():
    with pytest.raises(PsconvError, match=r"watchdog: cycles 1; allowed: an integer >= 2"):
        BoardTop(CFG, 12_000_000, 3_000_000, bridge=True, watchdog_cycles=1)
