"""The `edgellm` click group: how every command is found and how its errors reach the user.

Every error edgellm's library raises for bad input is a ValueError (TokenizerError, ParityError,
the server's RequestError are subclasses), with a message that says what is wrong, what was
received and what to do. `Group.invoke` runs every command, the tokenizer subgroup's included,
and turns such an error into click's one line on stderr (`Error: ...`) and exit code 1, so
commands call the library without a try block of their own:

- ValueError -> its message (a prompt too long for the context names `--truncate`);
- a missing optional dependency (ModuleNotFoundError) of a command that needs an extra ->
  which module, and the pip command that installs the extra;
- OSError (a file that cannot be read or written) -> the reason and the path.

Anything else is a bug and keeps its traceback. Ctrl-C is the commands' own business: a command
that streams ends its line and exits cleanly.
"""

from __future__ import annotations

import errno

import click

from edgellm.session.batching import PromptTooLong

# the pip extra each command needs beyond the runtime's numpy and onnxruntime
EXTRAS = {"train": "train", "export": "train", "upgrade": "train", "serve": "serve"}


class Group(click.Group):
    """A click group that maps library errors to ClickException, and loads the commands that need
    an optional extra only when one is invoked (so `edgellm generate` never imports TensorFlow).

    Example:
        >>> @click.group(cls=Group)
        ... def main(): ...
    """

    lazy = {"train": ("edgellm.training.train", "command", "Train a model on text files (train extra).")}

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx, name):
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module_name, attr, help_text = self.lazy[name]
        try:
            module = __import__(module_name, fromlist=[attr])
        except ModuleNotFoundError as error:
            return _missing_extra(name, help_text, error)
        return getattr(module, attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PromptTooLong as error:  # named by its option, not the library's argument
            raise click.ClickException(error.explain("--truncate error", "--truncate left")) from None
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        except ModuleNotFoundError as error:
            extra = EXTRAS.get(ctx.invoked_subcommand)
            if extra is None:  # the runtime's own dependencies are always installed: a broken install
                raise
            raise click.ClickException(f"edgellm {ctx.invoked_subcommand} needs {error.name}, which is not "
                                       f"installed. Install it with: pip install 'edgellm[{extra}]'") from None
        except OSError as error:
            if error.errno == errno.EPIPE:  # stdout closed early (`| head`): click ends quietly
                raise
            where = f" Received: {error.filename}." if error.filename else ""
            raise click.ClickException(f"{error.strerror or error}.{where} Check the path and its permissions.") \
                from None


def _missing_extra(name: str, help_text: str, error: ModuleNotFoundError) -> click.Command:
    """A stand-in for a command whose module cannot be imported: `--help` still works, and running
    it raises the import error, which `Group.invoke` explains."""

    def fail(**_):
        raise error

    return click.Command(name, callback=fail, help=help_text, context_settings={"ignore_unknown_options": True},
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)])
