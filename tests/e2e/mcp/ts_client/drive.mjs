// Drive `aifr mcp` with the official TypeScript SDK client (@modelcontextprotocol/client).
//
// Usage: node drive.mjs CONFIG_JSON
//   {"sdk": ".../node_modules/@modelcontextprotocol/client", "aifr": "/path/aifr",
//    "project": "/path/project", "http": {"url": "http://127.0.0.1:PORT/mcp", "token": "..."}}
//
// Over stdio (the client launches `aifr mcp`) and over streamable HTTP (a running server,
// bearer token), it lists tools and resources and calls a fixed set of tools, letting the
// client validate everything it validates (structuredContent against outputSchema with
// ajv, elicitation requests and answers, progress). It prints one JSON summary on stdout;
// what the client threw is recorded where it happened, so the test names the failure.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(process.argv[2]);

async function importExport(subpath) {
    const manifest = JSON.parse(readFileSync(join(config.sdk, 'package.json'), 'utf8'));
    return import(pathToFileURL(join(config.sdk, manifest.exports[subpath].import.default)).href);
}

const { Client, StreamableHTTPClientTransport } = await importExport('.');
const { StdioClientTransport } = await importExport('./stdio');

function errorOf(error) {
    return { threw: error.constructor.name, code: error.code ?? null, message: String(error.message) };
}

function summarize(result) {
    const payload = result._meta?.['aifr/error'] ?? null;
    return {
        isError: result.isError === true,
        code: payload?.error?.code ?? null,
        text: result.content?.[0]?.text ?? null,
        structured: result.structuredContent ?? null,
        payload,
        meta: result._meta ?? null
    };
}

async function call(client, name, args, options = {}) {
    try {
        return summarize(await client.callTool({ name, arguments: args }, options));
    } catch (error) {
        return errorOf(error);
    }
}

async function attempt(action) {
    try {
        return await action();
    } catch (error) {
        return errorOf(error);
    }
}

function connectTransport(kind) {
    if (kind === 'stdio') {
        return new StdioClientTransport({
            command: config.aifr,
            args: ['mcp', '--transport', 'stdio', '-p', config.project],
            env: process.env,
            cwd: config.project,
            stderr: 'ignore'
        });
    }
    return new StreamableHTTPClientTransport(new URL(config.http.url), {
        requestInit: { headers: { Authorization: `Bearer ${config.http.token}` } }
    });
}

async function connect(kind, era, { elicitation, answers }) {
    const capabilities = elicitation ? { elicitation: { form: {} } } : {};
    const options = { capabilities };
    if (era === 'modern') options.versionNegotiation = { mode: 'auto' };
    const client = new Client({ name: 'aifr-ts-e2e', version: '1.0.0' }, options);
    const asked = [];
    const errors = [];
    client.onerror = error => errors.push(String(error.message));
    if (elicitation) {
        client.setRequestHandler('elicitation/create', async request => {
            const answer = answers.shift() ?? { action: 'cancel' };
            asked.push({
                mode: request.params.mode ?? 'form',
                message: request.params.message,
                schema: request.params.requestedSchema,
                answered: answer
            });
            return answer;
        });
    }
    const transport = connectTransport(kind);
    await client.connect(transport);
    // What arrives on the wire, before the client dispatches it: the TypeScript client
    // runs notification handlers a microtask late but responses at once, so progress
    // sent right before a response can reach a request the client already closed
    // (typescript-sdk issue #2580). The tap shows what the server sent, in order.
    const wire = [];
    const dispatch = transport.onmessage;
    transport.onmessage = (message, extra) => {
        if (message.method === 'notifications/progress') wire.push({ progress: message.params });
        else if (message.id !== undefined && message.method === undefined) wire.push({ response: message.id });
        dispatch(message, extra);
    };
    return { client, asked, errors, wire };
}

// Asynchronous, so the event loop keeps running while the CLI works: a blocked loop
// cannot retire the HTTP client's idle keep-alive sockets, and the next call would go
// out on one the server had closed meanwhile.
async function approve(approvalId) {
    await promisify(execFile)(config.aifr, ['approvals', 'approve', approvalId, '--as', 'alice', '-p', config.project], {
        cwd: config.project,
        env: process.env
    });
}

async function stdlib(client, dir) {
    const calls = {};
    calls.write = await call(client, 'io.fs.write_file', { path: `${dir}/a.txt`, content: 'hello\n' });
    calls.read = await call(client, 'io.fs.read_file', { path: `${dir}/a.txt` });
    calls.list = await call(client, 'io.fs.list_dir', { path: dir });
    calls.stat = await call(client, 'io.fs.stat', { path: `${dir}/a.txt` });
    calls.stat_missing = await call(client, 'io.fs.stat', { path: `${dir}/nothing.txt` });
    calls.move = await call(client, 'io.fs.move', { source: `${dir}/a.txt`, destination: `${dir}/b.txt` });
    const token = calls.move.structured?.undo?.token;
    calls.restore = await call(client, 'io.fs.restore', { token: token ?? 'missing' });
    calls.delete = await call(client, 'io.fs.delete', { path: `${dir}/a.txt` });
    calls.read_missing = await call(client, 'io.fs.read_file', { path: `${dir}/a.txt` });
    calls.read_outside = await call(client, 'io.fs.read_file', { path: '/etc/hostname' });
    calls.csv = await call(client, 'data.csv.parse', { text: 'a,b\n1,2\n3,4\n' });
    calls.json = await call(client, 'data.json.parse', { text: '{"x": [1, 2, {"y": null}]}' });
    calls.json_scalar = await call(client, 'data.json.parse', { text: '7' });
    calls.query = await call(client, 'data.query', { data: { items: [{ p: 5 }, { p: 12 }] }, expression: 'items[?p > `10`].p' });
    calls.transform = await call(client, 'data.transform', { data: { a: { b: 1 } }, mapping: { out: 'a.b' } });
    calls.env = await call(client, 'sys.env.read', { names: ['TS_E2E_PLAIN', 'TS_E2E_API_TOKEN'] });
    calls.exec = await call(client, 'sys.exec', { argv: ['echo', 'hi'] });
    calls.http_get = await call(client, 'io.net.http_get', { url: 'http://127.0.0.1:9/' });
    calls.http_request = await call(client, 'io.net.http_request', { url: 'http://127.0.0.1:9/', method: 'POST' });
    return calls;
}

async function governed(client) {
    const calls = {};
    calls.allowed = await call(client, 'shop.greet', { name: 'Ada', times: 2 });
    calls.wrapped = await call(client, 'shop.count', { text: 'four' });
    calls.stamped = await call(client, 'shop.placed', { order_id: 5 });
    calls.denied = await call(client, 'shop.orders.cancel', { order_id: 1 });
    calls.bad_length = await call(client, 'shop.greet', { name: '' });
    calls.bad_range = await call(client, 'shop.greet', { name: 'Ada', times: 9 });
    calls.missing = await call(client, 'shop.refund', { amount: 5 });
    calls.unknown = await call(client, 'shop.nothing', {});
    return calls;
}

async function resources(client, runId, approvalId) {
    const out = {};
    out.list = await attempt(async () => (await client.listResources()).resources.map(r => r.uri));
    out.templates = await attempt(async () =>
        (await client.listResourceTemplates()).resourceTemplates.map(t => t.uriTemplate)
    );
    const read = async uri =>
        attempt(async () => {
            const { contents } = await client.readResource({ uri });
            return { uri: contents[0].uri, mimeType: contents[0].mimeType ?? null, json: JSON.parse(contents[0].text) };
        });
    out.manifest = await read('aifr://capabilities/manifest');
    out.audit = await read('aifr://audit/recent');
    out.run = runId ? await read(`aifr://runs/${runId}`) : null;
    out.approval = approvalId ? await read(`aifr://approvals/${approvalId}`) : null;
    out.unknown_run = await read('aifr://runs/no-such-run');
    return out;
}

async function workflow(session, name, args) {
    const progress = [];
    session.wire.length = 0;
    session.errors.length = 0;
    const result = await call(session.client, name, args, {
        onprogress: p => progress.push({ progress: p.progress, total: p.total ?? null, message: p.message ?? null })
    });
    return { result, progress, wire: [...session.wire], errors: [...session.errors] };
}

async function session(kind, era, order) {
    const out = {};
    // A client that shows forms: the operator (alice) approves the first refund, rejects
    // the second, dismisses the third.
    const answers = [
        { action: 'accept', content: { decision: 'approve', comment: 'ok' } },
        { action: 'accept', content: { decision: 'reject', comment: 'no' } },
        { action: 'decline' }
    ];
    const first = await connect(kind, era, { elicitation: true, answers });
    const { client, asked } = first;
    try {
        out.server = client.getServerVersion()?.name ?? null;
        out.protocol = client.getNegotiatedProtocolVersion?.() ?? null;
        out.tools = await attempt(async () =>
            (await client.listTools()).tools.map(t => ({
                name: t.name,
                annotations: t.annotations ?? null,
                hasOutputSchema: t.outputSchema !== undefined
            }))
        );
        out.stdlib = await stdlib(client, `notes-${kind}`);
        out.governed = await governed(client);
        out.approve = await call(client, 'shop.refund', { order_id: order, amount: 5 });
        out.reject = await call(client, 'shop.refund', { order_id: order + 1, amount: 5 });
        out.decline = await call(client, 'shop.refund', { order_id: order + 2, amount: 5 });
        out.asked = asked;
        out.welcome = await workflow(first, 'workflow.welcome', { name: 'Ada' });
        out.goodwill = await workflow(first, 'workflow.goodwill', { order: order + 3 });
        out.resources = await resources(
            client,
            out.welcome.result.structured?.id ?? null,
            out.approve.meta?.['aifr/approval_id'] ?? out.decline.payload?.approval_id ?? null
        );
    } finally {
        await client.close();
    }

    // A client without elicitation: the call is pending; alice approves on the command
    // line; the same call again runs the approved request.
    const plain = await connect(kind, era, { elicitation: false });
    try {
        const args = { order_id: order + 4, amount: 7 };
        out.pending = await call(plain.client, 'shop.refund', args);
        const approvalId = out.pending.payload?.approval_id;
        out.status_pending = await call(plain.client, 'aifr.approvals.status', { approval_id: approvalId ?? '' });
        out.approved_by_cli = await attempt(async () => (await approve(approvalId), true));
        out.after_approval = await call(plain.client, 'shop.refund', args);
        out.status_consumed = await call(plain.client, 'aifr.approvals.status', { approval_id: approvalId ?? '' });
    } finally {
        await plain.client.close();
    }
    return out;
}

const summary = {};
summary.stdio = await attempt(() => session('stdio', 'legacy', 100));
summary.http = await attempt(() => session('http', 'legacy', 200));
summary.stdio_modern = await attempt(() => session('stdio', 'modern', 300));
summary.http_modern = await attempt(() => session('http', 'modern', 400));
process.stdout.write(JSON.stringify(summary) + '\n');
