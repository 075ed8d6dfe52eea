import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the example on :5173 and proxies the API to a local tokenrelay, so the
// browser sees one origin (no CORS set-up needed). TOKENRELAY_URL points it elsewhere.
const target = process.env.TOKENRELAY_URL || "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: { "/api": target, "/static": target },
    fs: { allow: ["../.."] }, // the JS client lives in the Python package (one copy of it)
  },
  test: { environment: "jsdom" },
});
