"""The async SDK: a subset (create, command, file, list, kill)."""

import asyncio

from e2b import AsyncSandbox, SandboxQuery


def test_async_subset(server):
    async def main():
        sbx = await AsyncSandbox.create(template="minimal", metadata={"async": "yes"})
        try:
            r = await sbx.commands.run("echo async")
            assert r.stdout == "async\n"
            await sbx.files.write("/tmp/x", "y")
            assert await sbx.files.read("/tmp/x") == "y"
            listed = await AsyncSandbox.list(query=SandboxQuery(metadata={"async": "yes"})).next_items()
            assert [s.sandbox_id for s in listed] == [sbx.sandbox_id]
        finally:
            assert await sbx.kill() is True

    asyncio.run(main())
