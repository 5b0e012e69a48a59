// The README's React hooks (readme.jsx, copied from README.md as they are) in an app:
// two components on one job, a third on another job, and the connection status.
import { createRoot } from "react-dom/client";
import { BuildProgress, ConnectionStatus } from "./readme.jsx";
import { one, other } from "./setup.js";

createRoot(document.getElementById("app")).render(
  <>
    <ConnectionStatus />
    <div id="first">
      <BuildProgress id={one} />
    </div>
    <div id="second">
      <BuildProgress id={one} />
    </div>
    <div id="third">
      <BuildProgress id={other} />
    </div>
  </>,
);
