// Verifies a LiveKit access token with the LiveKit server SDK's own TokenVerifier.
//
//   LK_API_KEY=... LK_API_SECRET=... LK_TOKEN=... node verify-livekit.mjs
//
// stdout, one JSON line:
//   success: the verified claim grants (the token's payload as TokenVerifier returns it), exit 0;
//   failure: {"error": "<message>"}, exit 1 (a missing variable is a failure too).
import { TokenVerifier } from 'livekit-server-sdk';

function emit(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

async function main() {
  const { LK_API_KEY: key, LK_API_SECRET: secret, LK_TOKEN: token } = process.env;
  for (const [name, value] of [['LK_API_KEY', key], ['LK_API_SECRET', secret], ['LK_TOKEN', token]]) {
    if (!value) {
      throw new Error(`${name} is not set`);
    }
  }
  const grants = await new TokenVerifier(key, secret).verify(token);
  emit(grants);
}

main().then(
  () => {
    process.exitCode = 0;
  },
  (err) => {
    const message = err && err.code ? `${err.code}: ${err.message}` : String(err && err.message ? err.message : err);
    emit({ error: message });
    process.exitCode = 1;
  },
);
