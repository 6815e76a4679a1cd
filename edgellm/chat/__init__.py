"""A conversation with a plain language model: a transcript that the model continues.

The transcript is the model folder's chat template (tokenizer_config.json's `chat_template`,
edgellm/chat/template.py) rendered with the conversation so far, the one template that
`edgellm serve`, transformers, transformers.js and onnxruntime-genai render too: "System: ..."
for the system text, then one "NAME: message" line per turn, the user's and the model's names
passed as the template variables `user_name` and `assistant_name`, then "BOT:" for the model to
continue. Its reply ends at a blank line or when it starts the user's next line. Old turns are
dropped, oldest first, so that the transcript and the reply fit in the context.

A task model (translation, question answering) has no conversation: each message is its own
prompt, wrapped in the task template by the generator, and no history is kept.

Example:
    >>> import edgellm
    >>> chat = Chat(edgellm.load("shakespeare"), user="ROMEO", bot="JULIET", max_new_tokens=40)
    >>> reply = "".join(chat.send("Good morrow, fair maid."))
"""

from __future__ import annotations

from collections.abc import Iterator



class Chat:
    """Keeps the history of one conversation with `model`.

    Args:
        model: a loaded `edgellm.Generator`.
        user: the user's name in the transcript.
        bot: the model's name in the transcript.
        system: text placed before the turns (kept when old turns are dropped).
        **settings: generation settings for the replies (`GenerationConfig` fields).
    """

    def __init__(self, model, user: str = "User", bot: str = "Model", system: str = "", **settings):
        for name, value in (("user", user), ("bot", bot)):
            if not value or "\n" in value or ":" in value:
                raise ValueError(f"The {name} name must be one line without a colon. Received: {name}={value!r}")
        self.model, self.user, self.bot, self.system = model, user, bot, system
        self.task = model.task_template
        stops = tuple(settings.pop("stop_strings", ())) + (() if self.task else ("\n\n", f"\n{user}:"))
        self.config = model.settings(stop_strings=stops, **settings)
        if self.config.num_return_sequences > 1 or self.config.num_beams > 1:
            raise ValueError("A chat reply is one sampled or greedy sequence. Received: num_return_sequences="
                             f"{self.config.num_return_sequences}, num_beams={self.config.num_beams}. Leave both at 1.")
        self.turns: list[tuple[str, str]] = []  # (user message, reply)
        if not self.task:  # a chat template that fails on any conversation fails here, before a turn
            self._render([], "Hello")

    def _messages(self, turns: list[tuple[str, str]], message: str) -> list[dict]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for user_text, reply in turns:
            messages += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}]
        return messages + [{"role": "user", "content": message}]

    def _render(self, turns: list[tuple[str, str]], message: str) -> str:
        return self.model.folder.render_chat(self._messages(turns, message), user_name=self.user,
                                             assistant_name=self.bot)

    def transcript(self, message: str) -> str:
        """The text the model continues for `message`, with as much history as fits."""
        if self.task:
            return message
        return self._render(self._kept(message), message)

    def _kept(self, message: str) -> list[tuple[str, str]]:
        """The most recent turns whose transcript with `message` fits the context."""
        context = self.model.config.context_length
        room = context - min(self.config.max_new_tokens, context // 2)  # tokens the transcript may use
        kept = list(self.turns)
        while kept and len(self.model.tokenizer.encode(self._render(kept, message))) > room:
            kept.pop(0)
        return kept

    def send(self, message: str) -> Iterator[str]:
        """Stream the model's reply to `message`; the exchange joins the history at the end."""
        if not message.strip():
            raise ValueError("The message is empty. Type some text.")
        pieces = []
        config = self.config.replace(truncate="left")  # a message longer than the context keeps its end
        if self.task:
            stream = self.model.stream(message, config)
        else:  # special tokens the template writes (ChatML's <|im_start|>) are special ids, contents plain text
            ids = self.model.folder.encode_chat(self.model.tokenizer, self._messages(self._kept(message), message),
                                                user_name=self.user, assistant_name=self.bot)
            stream = self.model.text_steps(ids, config)
        for piece in stream:
            pieces.append(piece)
            yield piece
        if not self.task:
            self.turns.append((message, "".join(pieces).strip()))
