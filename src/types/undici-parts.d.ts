// undici's package entry loads everything it has (fetch, WebSocket, caches, mocks): about
// 12 MB of a data-plane worker's memory that tandem never uses. src/pool/undici.ts
// imports the pool from its own file; this declaration gives it the types of the
// public entry.
declare module 'undici/lib/dispatcher/pool.js' {
  import { Pool } from 'undici';
  export = Pool;
}

declare module 'undici/lib/core/connect.js' {
  import { buildConnector } from 'undici';
  export = buildConnector;
}
