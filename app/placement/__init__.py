"""Where an instance is created: its zones and regions in order of preference, and failover.

A request may name ``zones`` and ``fallback_regions`` besides its ``region`` (and optional
``zone``); ``plan`` turns them into an ordered list of choices, pure and checked against the
provider's catalog at request time. The ``create`` step (``service.create_with_failover``) tries
the choices in order: a capacity error cleans up that zone and moves to the next choice, a quota
error skips the rest of that region. Zones that just ran out of capacity are put on hold for other
launches for a while (``holds``, shared through the database). Every attempt is recorded in the
job before its zone is cleaned up, so a worker killed between attempts is replaced by one that
finishes the cleanup and resumes at the next choice.
"""
