// A hostile client: floods /info with about 10,000 events/s (500 times the rate limit)
// and reconnects each time the server hangs up on it. Runs until killed.
//   node flood.mjs URL [CONNECTIONS]
import { io } from "socket.io-client";

const [url, connections = "1"] = process.argv.slice(2);

function flood() {
  const socket = io(`${url}/info`, { transports: ["websocket"], reconnection: false, forceNew: true });
  const burst = () => {
    if (!socket.connected) return;
    for (let i = 0; i < 50; i++) socket.emit("recent", { limit: 1 });
    setTimeout(burst, 5);
  };
  socket.on("connect", burst);
  socket.on("disconnect", () => setTimeout(flood, 10));
  socket.on("connect_error", () => setTimeout(flood, 100));
}

for (let i = 0; i < Number(connections); i++) flood();
