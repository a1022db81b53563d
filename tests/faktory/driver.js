"use strict";
// Drives faktory-worker, Faktory's client library of npm, for the tests of
// Leash's Faktory port (tests/faktory/node_client.py starts it): one JSON
// request a line on stdin, one JSON answer a line on stdout.
//
//   node driver.js HOST PORT WID [PASSWORD]
//
// Requests: {"op": "push", "jobtype", "args", and any of jid, queue,
// priority, retry, reserveFor, custom, at}, {"op": "pushBulk", "jobs"},
// {"op": "fetch", "queues"}, {"op": "ack", "jid"}, {"op": "fail", "jid",
// "errtype", "message"}, {"op": "beat"}, {"op": "info"}, {"op": "flush"},
// {"op": "mutate", "target", "cmd", and any of jids, jobtype, pattern},
// {"op": "work", "wid", "queues", "concurrency", "count"} (a Worker runs
// until it has handled count jobs, then stops), {"op": "close"}.
// Answers: {"ok": result} or {"error": message}.

const readline = require("readline");
const { Client, Worker } = require("faktory-worker");

const [host, port, wid, password] = process.argv.slice(2);
const client = new Client({ host, port, wid, password, labels: ["node"], poolSize: 2 });

async function push(request) {
  const job = client.job(request.jobtype, ...request.args);
  for (const field of ["jid", "queue", "priority", "retry", "reserveFor", "custom", "at"]) {
    if (request[field] !== undefined) job[field] = request[field];
  }
  return job.push();
}

async function mutate(request) {
  const mutation = client[request.target];
  if (request.jids) mutation.withJids(request.jids);
  if (request.jobtype) mutation.ofType(request.jobtype);
  if (request.pattern) mutation.matching(request.pattern);
  return mutation[request.cmd]();
}

async function work(request) {
  let handled = 0;
  let finished;
  const done = new Promise((resolve) => (finished = resolve));
  const count = () => {
    handled += 1;
    if (handled >= request.count) finished();
  };
  const worker = new Worker({
    host,
    port,
    password,
    wid: request.wid,
    queues: request.queues,
    concurrency: request.concurrency,
    registry: {
      square: async (n) => {
        count();
        return n * n;
      },
      explode: async () => {
        count();
        throw new Error("exploded on purpose");
      },
    },
  });
  await worker.work();
  await done;
  await worker.stop();
  return handled;
}

async function run(request) {
  switch (request.op) {
    case "push":
      return push(request);
    case "pushBulk":
      return client.pushBulk(request.jobs);
    case "fetch":
      return client.fetch(...request.queues);
    case "ack":
      return client.ack(request.jid);
    case "fail": {
      const error = new Error(request.message);
      error.code = request.errtype;
      return client.fail(request.jid, error);
    }
    case "beat":
      return client.beat();
    case "info":
      return client.info();
    case "flush":
      return client.flush();
    case "mutate":
      return mutate(request);
    case "work":
      return work(request);
    case "close":
      await client.close();
      return null;
    default:
      throw new Error(`unknown op ${request.op}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  let answer;
  try {
    answer = { ok: (await run(JSON.parse(line))) ?? null };
  } catch (error) {
    answer = { error: String(error && error.message ? error.message : error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
lines.on("close", () => process.exit(0));
