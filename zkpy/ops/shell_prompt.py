"""The interactive side of `zkpy shell`: a prompt_toolkit prompt with completion of commands and paths.

prompt_toolkit does the line editing, history keys and completion menu; `patch_stdout` lets watch
events, printed from the client's event thread, appear above the prompt instead of inside the line
being typed. Which words complete is zkpy.ops.zkcli's (pure, unit-tested); the children of a
partly typed path come from the server at the moment Tab is pressed.
"""

from __future__ import annotations

from collections.abc import Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from zkpy.ops import zkcli
from zkpy.ops.shell import Quit, Shell


class ShellCompleter(Completer):
    """The first word completes to a command name; a word starting with `/` to a znode path."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        before = document.text_before_cursor
        word = document.get_word_before_cursor(WORD=True)
        if not before[: len(before) - len(word)].strip():
            candidates = zkcli.command_completions(word)
        elif word.startswith("/"):
            parent, _ = zkcli.split_for_completion(word)
            candidates = zkcli.path_completions(word, self.shell.children(parent))
        else:
            return
        for candidate in candidates:
            yield Completion(candidate, start_position=-len(word))


def interact(shell: Shell) -> int:
    """Read, run and print until `quit` or Ctrl-D; Ctrl-C drops the line being typed, as in a shell."""
    session: PromptSession[str] = PromptSession(
        history=InMemoryHistory(), completer=ShellCompleter(shell), complete_while_typing=False
    )
    with patch_stdout(raw=True):
        shell.print("Welcome to zkpy shell! (help lists the commands, Tab completes them and paths)")
        shell.print(zkcli.format_event(-1, 3, None))  # zkCli greets a new session with its first event
        while True:
            try:
                line = session.prompt(shell.prompt)
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            try:
                shell.run_line(line)
            except Quit:
                break
            except KeyboardInterrupt:
                shell.error("interrupted (the request may still complete)")
    return shell.last_failure
