"""A shared lab through labgrid: a board's place is reserved and acquired through the
labgrid coordinator, its serial port (a NetworkSerialPort that the place's exporter
serves over RFC 2217, with ser2net) is the console embedbuild's own console and U-Boot
drivers use, and the place is released when the command ends, also on an error, Ctrl-C
or SIGTERM.

labgrid is an optional extra (``pip install 'embedbuild[labgrid]'``, labgrid 26.0.1): it
is imported only here, only when a place is asked for.

One process holds one place at a time (labgrid's client shares one connection per
coordinator within a process, and the coordinator takes one session per connection).

Waiting for a busy place is labgrid's own reservation: a reservation naming the place
(the coordinator's ``name`` tag) waits in the coordinator's queue, in order, until the
place is free; then it is acquired, and when this command releases it, the reservation
is cancelled so that the next one in the queue gets the place at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.netns import uninterrupted
from embedbuild.rig.resource import LabgridPlace

LABGRID_VERSION = "26.0.1"
HINT = f"pip install 'embedbuild[labgrid]' (labgrid {LABGRID_VERSION})"
CONNECT_TIMEOUT = 10.0  # seconds to reach the coordinator
POLL = 0.5  # seconds between looks at a waiting reservation


def _not_labgrids(record: logging.LogRecord) -> bool:
    """labgrid's client logs its connection troubles on the root logger; embedbuild says
    them once, in its own error."""
    return f"{os.sep}labgrid{os.sep}" not in record.pathname


def require_labgrid() -> Any:
    """The labgrid package, or one line saying how to get it."""
    try:
        import labgrid  # noqa: F401
        from labgrid.remote import client
    except ImportError:
        raise EmbedbuildError("labgrid is not installed (--place and `labgrid env` use it)",
                              hint=HINT) from None
    return client


class PlaceDriver:
    """Holds one labgrid place while the command runs (a context manager).

    Args:
        place: the place and its coordinator.
        waiting: told once, with who holds the place, when it has to be waited for.
    """

    def __init__(self, place: LabgridPlace, waiting=None) -> None:
        self.place = place
        self.waiting = waiting
        self.session: Any = None
        self.token: str | None = None
        self.acquired = False
        self.url: str | None = None

    def _run(self, coro, timeout: float | None = None):
        # asyncio only here and below: every rig command imports this module, few talk
        # to labgrid, and importing asyncio costs each of them some 50 ms of CPU.
        import asyncio

        if timeout is not None:
            coro = asyncio.wait_for(coro, timeout)
        return self.session.loop.run_until_complete(coro)

    def _rpc(self, name: str, request: Any, timeout: float = CONNECT_TIMEOUT) -> Any:
        import grpc

        try:
            return self._run(getattr(self.session.stub, name)(request), timeout)
        except grpc.aio.AioRpcError as e:
            raise EmbedbuildError(f"labgrid coordinator {self.place.coordinator}: {name}: "
                                  f"{e.details()}") from None

    def connect(self) -> None:
        """A session with the coordinator; the place must exist there."""
        import asyncio

        client = require_labgrid()
        from labgrid.util.proxy import proxymanager

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # the gRPC channel binds to the current loop
        address = proxymanager.get_grpc_address(self.place.coordinator, default_port=20408)
        self.session = client.ClientSession(address, loop)
        try:
            self._run(self.session.start(), CONNECT_TIMEOUT)
        except (TimeoutError, client.ServerError, OSError) as e:
            self.session = None
            loop.close()
            asyncio.set_event_loop(None)
            raise EmbedbuildError(f"cannot reach the labgrid coordinator at "
                                  f"{self.place.coordinator}: {e or 'no answer'}",
                                  hint="start labgrid-coordinator there, or give "
                                  "--coordinator HOST:PORT (or LG_COORDINATOR)") from None
        if self.place.name not in self.session.places:
            known = ", ".join(sorted(self.session.places)) or "none"
            raise EmbedbuildError(f"no labgrid place {self.place.name!r} at "
                                  f"{self.place.coordinator} (places: {known})",
                                  hint="labgrid-client -p NAME create, then add-match")

    def acquire(self) -> str:
        """Reserve the place (waiting in the coordinator's queue while another holds it,
        at most ``place.timeout`` seconds), acquire it and return its console's URL."""
        import asyncio

        from labgrid.remote.common import ReservationState
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        name = self.place.name
        res = self._rpc("CreateReservation", pb.CreateReservationRequest(
            filters={"main": pb.Reservation.Filter(filter={"name": name})}, prio=0.0))
        self.token = res.reservation.token
        deadline = time.monotonic() + self.place.timeout
        told = False
        while True:
            state = self._rpc("PollReservation", pb.PollReservationRequest(token=self.token))
            if ReservationState(state.reservation.state) is not ReservationState.waiting:
                break
            if not told and self.waiting is not None:
                holder = self.session.places[name].acquired or "a reservation before yours"
                self.waiting(f"place {name} is held by {holder}; waiting for it "
                             f"({self.place.timeout:.0f} s at most)")
                told = True
            if time.monotonic() > deadline:
                raise EmbedbuildError(f"labgrid place {name} was not free within "
                                      f"{self.place.timeout:.0f} s",
                                      hint="try later, or wait longer (--place-timeout)")
            self._run(asyncio.sleep(POLL))
        self._rpc("AcquirePlace", pb.AcquirePlaceRequest(placename=name))
        self.acquired = True
        self._run(self.session.sync_with_coordinator(), CONNECT_TIMEOUT)
        self.url = self._serial_url()
        return self.url

    def _serial_url(self) -> str:
        place = self.session.places[self.place.name]
        ports = [(rname, r) for (rname, cls), r in
                 self.session.get_target_resources(place).items()
                 if cls == "NetworkSerialPort"]
        if not ports:
            raise EmbedbuildError(f"labgrid place {self.place.name} has no serial port",
                                  hint="add-match the exporter's NetworkSerialPort (its "
                                  "RawSerialPort or USBSerialPort, served through ser2net)")
        args = ports[0][1].args
        scheme = "socket" if args.get("protocol") == "raw" else "rfc2217"
        return f"{scheme}://{args['host']}:{args['port']}"

    def release(self) -> None:
        """Release the place and cancel the reservation (the next waiter gets it)."""
        if self.session is None:
            return
        import asyncio

        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        with uninterrupted():
            try:
                if self.acquired:
                    self._rpc("ReleasePlace", pb.ReleasePlaceRequest(placename=self.place.name))
                    self.acquired = False
                if self.token is not None:
                    self._rpc("CancelReservation", pb.CancelReservationRequest(token=self.token))
                    self.token = None
            finally:
                with contextlib.suppress(Exception):
                    self._run(self.session.stop(), 5)
                    self._run(self.session.close(), 5)
                self.session.loop.close()
                asyncio.set_event_loop(None)
                self.session = None

    def __enter__(self) -> PlaceDriver:
        logging.getLogger().addFilter(_not_labgrids)
        try:
            self.connect()
            self.acquire()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        finally:
            logging.getLogger().removeFilter(_not_labgrids)
