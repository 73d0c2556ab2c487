// Connect to this server's /websocket and show each time it pushes.
const params = new URLSearchParams(location.search);
const id = params.get("Id") || crypto.randomUUID().slice(0, 8);
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(`${scheme}//${location.host}/websocket?Id=${encodeURIComponent(id)}`);
const clock = document.getElementById("clock");
const status = document.getElementById("status");
socket.addEventListener("open", () => { status.textContent = `Connected as ${id}`; });
socket.addEventListener("message", (event) => { clock.textContent = event.data; });
socket.addEventListener("close", (event) => {
  status.textContent = `Closed (${event.code}) ${event.reason}`;
});
