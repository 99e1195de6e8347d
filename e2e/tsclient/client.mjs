// An MCP client built on the official TypeScript SDK, as assistants use
// it, for e2e/mcp_long_test.go. It connects to the homelab-deploy MCP
// server described by its one argument (JSON), runs the two long-call
// scenarios against one host, and prints what it saw as one JSON object:
//
//   a: deploy with "wait": false, then status until done;
//   b: a blocking deploy with a short request timeout that progress
//      notifications reset (resetTimeoutOnProgress).
//
// It judges nothing; the Go test does. It exits 1 only when it could not
// run a scenario at all (connection, protocol or timeout errors), with
// {"error": ...}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";

const cfg = JSON.parse(process.argv[2]);

function transport() {
  const headers = { Authorization: `Bearer ${cfg.token}` };
  switch (cfg.transport) {
    case "stdio":
      return new StdioClientTransport({ command: cfg.command, args: cfg.args, env: cfg.env, stderr: "inherit" });
    case "http":
      return new StreamableHTTPClientTransport(new URL(cfg.url), { requestInit: { headers } });
    case "sse":
      return new SSEClientTransport(new URL(cfg.url), {
        requestInit: { headers },
        eventSourceInit: { fetch: (url, init) => fetch(url, { ...init, headers: { ...init?.headers, ...headers } }) },
      });
  }
  throw new Error(`unknown transport ${cfg.transport}`);
}

const text = (res) => res.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");

async function main() {
  const client = new Client({ name: "e2e-ts", version: "1" });
  await client.connect(transport());
  const out = {};

  // tools/list goes through the SDK's schema checks (inputSchema and
  // outputSchema of every tool).
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();

  // An input that breaks the one-target rule comes back as a tool error.
  const bad = await client.callTool({ name: "deploy", arguments: {} });
  out.invalid = { isError: bad.isError === true, text: text(bad) };

  // a: return at once, then poll status.
  let start = Date.now();
  const first = await client.callTool({ name: "deploy", arguments: { hostname: cfg.host, wait: false } });
  out.a = { elapsedMs: Date.now() - start, isError: first.isError === true, structured: first.structuredContent, text: text(first), polls: 0 };
  const id = first.structuredContent?.id;
  if (id) {
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      const st = await client.callTool({ name: "status", arguments: { id } });
      out.a.polls++;
      out.a.last = { isError: st.isError === true, structured: st.structuredContent, text: text(st) };
      if (st.structuredContent?.done === true || out.a.polls > 120) break;
    }
  }

  // b: block with a 6 s timeout that every progress notification resets.
  const progress = [];
  start = Date.now();
  const res = await client.callTool(
    { name: "deploy", arguments: { hostname: cfg.host } },
    undefined,
    { timeout: 6000, resetTimeoutOnProgress: true, onprogress: (p) => progress.push(p) },
  );
  out.b = { elapsedMs: Date.now() - start, isError: res.isError === true, structured: res.structuredContent, text: text(res), progress };

  await client.close();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err) }) + "\n");
    process.exit(1);
  },
);
