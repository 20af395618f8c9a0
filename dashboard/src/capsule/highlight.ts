// Syntax highlighting of previews: highlight.js core with a few languages, loaded on demand.
// Its output escapes the text, so it may be inserted as HTML.

const languages: Record<string, string> = {
  py: 'python',
  sh: 'bash',
  bash: 'bash',
  js: 'javascript',
  mjs: 'javascript',
  ts: 'typescript',
  json: 'json',
  yml: 'yaml',
  yaml: 'yaml',
  toml: 'ini',
  ini: 'ini',
  conf: 'ini',
  md: 'markdown',
  rs: 'rust',
  go: 'go',
  html: 'xml',
  xml: 'xml',
  css: 'css',
  c: 'c',
  h: 'c',
};

export function languageOf(name: string): string | null {
  const ext = name.includes('.') ? name.split('.').pop()!.toLowerCase() : '';
  return languages[ext] ?? null;
}

export async function highlight(text: string, language: string): Promise<string> {
  const { default: hljs } = await import('highlight.js/lib/core');
  type Lang = { default: import('highlight.js').LanguageFn };
  if (!hljs.getLanguage(language)) {
    const mods: Record<string, () => Promise<Lang>> = {
      python: () => import('highlight.js/lib/languages/python'),
      bash: () => import('highlight.js/lib/languages/bash'),
      javascript: () => import('highlight.js/lib/languages/javascript'),
      typescript: () => import('highlight.js/lib/languages/typescript'),
      json: () => import('highlight.js/lib/languages/json'),
      yaml: () => import('highlight.js/lib/languages/yaml'),
      ini: () => import('highlight.js/lib/languages/ini'),
      markdown: () => import('highlight.js/lib/languages/markdown'),
      rust: () => import('highlight.js/lib/languages/rust'),
      go: () => import('highlight.js/lib/languages/go'),
      xml: () => import('highlight.js/lib/languages/xml'),
      css: () => import('highlight.js/lib/languages/css'),
      c: () => import('highlight.js/lib/languages/c'),
    };
    const mod = await mods[language]?.();
    if (!mod) return escape(text);
    hljs.registerLanguage(language, mod.default);
  }
  return hljs.highlight(text, { language, ignoreIllegals: true }).value;
}

export function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
