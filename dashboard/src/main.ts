import { mount } from 'svelte';
import './app.css';
import App from './App.svelte';
import { interceptLinks } from './lib/router.svelte';

interceptLinks();
mount(App, { target: document.getElementById('app')! });
