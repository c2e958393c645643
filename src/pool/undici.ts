// The part of undici the data plane uses, loaded from their own modules rather than the package
// entry, which would also load fetch, WebSocket, caches and mocks (measured: 29 MB of RSS
// for the entry against 16 MB for the pool alone). A data-plane worker's memory budget is
// tight: it must stream a 1 GiB body while staying under 150 MB. Only the dispatcher
// core comes this way: the convenience API (request, stream, …) is mixed in by the entry,
// so code that uses it (active health checks, in the primary) imports 'undici'.
import Pool from 'undici/lib/dispatcher/pool.js';

export { Pool };
import buildConnector from 'undici/lib/core/connect.js';

export { buildConnector };
