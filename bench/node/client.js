// The same job as bench/latency.lua's Lua runs, with the official Scalekit Node SDK:
// GetOrganization calls, sequential and with Promise.all at each concurrency
// (the next `concurrency` calls at once, until `seconds` have passed).
//   NODE_EXTRA_CA_CERTS=ca.pem node client.js <url> <seconds> 8,32,64  -> JSON lines
'use strict';
const { ScalekitClient } = require('@scalekit-sdk/node');

async function main() {
  const [url, secondsArg, concArg] = process.argv.slice(2);
  const seconds = Number(secondsArg || 1);
  const sk = new ScalekitClient(url, 'skc_test', 'test_secret_value');
  await sk.organization.getOrganization('org_warm');  // token fetched here, as for Lua
  const out = [];
  const run = async (conc) => {
    let calls = 0;
    const t0 = process.hrtime.bigint();
    let t = t0;
    do {
      if (conc === 0) {
        await sk.organization.getOrganization('org_' + calls);
        calls++;
      } else {
        const batch = [];
        for (let i = 0; i < conc; i++) batch.push(sk.organization.getOrganization('org_' + (calls + i)));
        await Promise.all(batch);
        calls += conc;
      }
      t = process.hrtime.bigint();
    } while (Number(t - t0) / 1e9 < seconds);
    out.push({ concurrency: conc, calls, seconds: Number(t - t0) / 1e9, rate: calls / (Number(t - t0) / 1e9) });
  };
  await run(32);     // warm-up (JIT, HTTP/2 session), not reported
  out.length = 0;
  await run(0);
  for (const c of concArg.split(',').map(Number)) await run(c);
  console.log(JSON.stringify(out));
}
main().catch((e) => { console.error(String(e && e.message || e)); process.exit(1); });
