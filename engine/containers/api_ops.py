"""ContainerOpsAPI: exec, top, cp, export, diff, commit (mixed into engine.api.Engine).

The dashboard and the CLI share these; the host-side halves of ``cp`` (Docker's
file/directory rules against a host path) are :func:`copy_to_container_path`
and :func:`copy_from_container_path`.
"""

from __future__ import annotations

from typing import BinaryIO

from engine.errors import InvalidArgument


class ContainerOpsAPI:
    # -- exec ------------------------------------------------------------------------
    def exec_container(
        self,
        ref: str,
        cmd: list[str],
        *,
        interactive: bool = False,
        tty: bool = False,
        detach: bool = False,
        env: list[str] | None = None,
        user: str = "",
        workdir: str = "",
        privileged: bool = False,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
    ) -> int:
        """Run ``cmd`` in a running container; its exit code (0 at once with ``detach``).

        Raises InvalidState when the container is not running and
        ``engine.containers.exec.ExecFailed`` (``exit_code`` 126/127, Docker's)
        when the command cannot be started.
        """
        from engine.containers.exec import ExecOptions, run_exec, running_container

        c = running_container(self, ref)
        opts = ExecOptions(
            cmd=list(cmd),
            interactive=interactive,
            tty=tty,
            detach=detach,
            env=list(env or []),
            user=user,
            workdir=workdir,
            privileged=privileged,
        )
        return run_exec(self, c, opts, stdin_fd, stdout_fd, stderr_fd)

    # -- top -------------------------------------------------------------------------
    def top_container(self, ref: str, ps_args: list[str] | None = None) -> dict:
        """``{"Titles": [...], "Processes": [[...]]}`` (Docker's API shape)."""
        from engine.containers.top import top

        return top(self, self.get_container(ref), ps_args)

    # -- cp / export -----------------------------------------------------------------
    def stat_container_path(self, ref: str, path: str) -> dict:
        """Docker's ``HEAD /archive`` stat (name, size, mode, mtime, linkTarget)."""
        from engine.containers import cp

        c = self.get_container(ref)
        with cp.rootfs(self, c) as root:
            return cp.stat_path(root, cp.check_container_path(path)).to_dict()

    def copy_from_container(
        self, ref: str, path: str, out: BinaryIO, *, follow_link: bool = False
    ) -> None:
        """Write a tar of ``path`` (named by its last component; ``dir/.`` = contents)."""
        from engine.containers import cp
        from engine.images import layers

        c = self.get_container(ref)
        with cp.rootfs(self, c) as root:
            layers.copy_out(root, cp.check_container_path(path), out, follow_link=follow_link)

    def copy_to_container(
        self, ref: str, path: str, stream: BinaryIO, *, archive: bool = False
    ) -> None:
        """Extract a tar into the directory ``path``; owners kept only with ``archive``."""
        from engine.containers import cp
        from engine.images import layers

        c = self.get_container(ref)
        with cp.rootfs(self, c) as root:
            layers.copy_in(root, cp.check_container_path(path), stream, preserve_owner=archive)

    def copy_to_container_path(
        self, host_src: str, ref: str, path: str, *, archive: bool = False
    ) -> None:
        """``cp HOST_SRC CTR:PATH`` with Docker's rules."""
        from engine.containers import cp

        cp.copy_host_to_container(
            self, self.get_container(ref), host_src, cp.check_container_path(path), archive=archive
        )

    def copy_from_container_path(
        self, ref: str, path: str, host_dst: str, *, follow_link: bool = False
    ) -> None:
        """``cp CTR:PATH HOST_DST`` with Docker's rules."""
        from engine.containers import cp

        cp.copy_container_to_host(
            self,
            self.get_container(ref),
            cp.check_container_path(path),
            host_dst,
            follow=follow_link,
        )

    def export_container(self, ref: str, out: BinaryIO) -> None:
        """A tar of the container's whole filesystem (running or not)."""
        from engine.containers import cp
        from engine.images import layers

        c = self.get_container(ref)
        with cp.rootfs(self, c) as root:
            layers.tar_dir(root, out)
        self.emit("container", "export", c.id, name=c.name)

    # -- diff / commit ---------------------------------------------------------------
    def diff_container(self, ref: str) -> list[dict]:
        """``[{"Path", "Kind"}]``; Kind 0 changed, 1 added, 2 deleted (Docker's API)."""
        from engine.containers.diff import container_changes

        return container_changes(self, self.get_container(ref))

    def commit_container(
        self,
        ref: str,
        repo_tag: str = "",
        message: str = "",
        author: str = "",
        changes: list[str] | None = None,
        pause: bool = True,
    ) -> str:
        """New image from the container; returns its ID ``sha256:...``."""
        from engine.containers.commit import commit
        from engine.images import reference as refs

        if repo_tag:
            try:
                refs.parse_reference(repo_tag)
            except InvalidArgument as e:
                raise InvalidArgument(
                    f"invalid reference format {repo_tag!r}: {e}", obj=repo_tag
                ) from None
        return commit(self, self.get_container(ref), repo_tag, message, author, changes, pause)
