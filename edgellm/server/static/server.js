// The server backend of the chat page: each reply streamed from edgellm serve's OpenAI API as
// server-sent events. Chat models use /v1/chat/completions; task models /v1/completions. Stopping
// aborts the request, and the server stops generating when the connection closes.
export async function load() {}

export async function* reply(info, turn, settings, signal) {
  const body = { stream: true, stream_options: { include_usage: true }, temperature: settings.temperature,
                 top_p: settings.top_p, max_tokens: settings.max_tokens, seed: settings.seed };  // undefined: left out
  if (settings.json) body.response_format = { type: "json_object" };
  if (turn.messages) body.messages = turn.messages;
  else body.prompt = turn.prompt;
  const response = await fetch(turn.messages ? "/v1/chat/completions" : "/v1/completions", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal });
  if (!response.ok) throw await refusal(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", tokens = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { tokens };
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {  // one event per blank-line-ended block
      const lines = buffer.slice(0, end).split("\n");
      const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      buffer = buffer.slice(end + 2);
      if (data === "[DONE]") return { tokens };
      if (!data) continue;
      const doc = JSON.parse(data);
      if (doc.error) throw new Error(doc.error.message);
      if (doc.usage) tokens = doc.usage.completion_tokens;  // the last chunk (include_usage)
      const choice = doc.choices?.[0];
      const text = turn.messages ? choice?.delta?.content : choice?.text;
      if (text) yield text;
    }
  }
}

// OpenAI's error body (429 queue full, 400 context exceeded, ...): its message with the status, and its code
async function refusal(response) {
  const text = await response.text();
  try {
    const { message, code } = JSON.parse(text).error;
    return Object.assign(new Error(`${response.status}: ${message}`), { code });
  } catch {
    return new Error(`${response.status} ${response.statusText}: ${text.slice(0, 300)}`);
  }
}
