"""The ``configure`` step: bring a fresh VM to what the user asked for.

With ``ONEBOX_CONFIGURE=skip`` the step only records that it was skipped.
"""

from __future__ import annotations

from app.lifecycle.engine import JobContext


async def configure_instance(ctx: JobContext) -> None:
    settings = ctx.services.settings
    if settings.configure == "skip":
        await ctx.event("configure.skipped", "configuration skipped (ONEBOX_CONFIGURE=skip)", "configure")
        return
    raise NotImplementedError("Ansible configuration is not available yet")
