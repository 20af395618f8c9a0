import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// Built into build/: index.html plus content-hashed files under assets/ (cached for a year by
// the server). No inline script: the server's Content-Security-Policy allows scripts from its
// own origin only. `npm run dev` proxies the API to a running `wrenn up` (WRENN_URL).
export default defineConfig({
  plugins: [svelte()],
  build: {
    outDir: 'build',
    emptyOutDir: true,
    assetsDir: 'assets',
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2022',
    chunkSizeWarningLimit: 700,
  },
  server: {
    proxy: {
      '/v1': { target: process.env.WRENN_URL ?? 'http://127.0.0.1:8000', ws: true },
      '/console.json': process.env.WRENN_URL ?? 'http://127.0.0.1:8000',
      '/docs': process.env.WRENN_URL ?? 'http://127.0.0.1:8000',
    },
  },
});
