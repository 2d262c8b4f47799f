// llama.cpp's decode and prefill speed on a GGUF, through node-llama-cpp's prebuilt CPU binaries (no compiler
// needed). bench/speed.py runs it when node-llama-cpp is installed (`make llamacpp`) and reads the JSON it prints.
//
//   node bench/llamacpp_node.mjs MODEL.gguf [threads] [new_tokens] [sequences] [prompt_tokens]
//
// Batch 1: one sequence decodes `new_tokens` tokens after its prompt (the first token, which includes the
// prefill, is not timed). Batch N: N sequences of one context decode at once; llama.cpp puts their next tokens in
// one batch. End of generation is ignored so every sequence decodes exactly `new_tokens` tokens.
import {join} from "node:path";
import {pathToFileURL} from "node:url";

// ES modules ignore NODE_PATH: bench/speed_llamacpp.py names the node_modules folder it installed
const modules = process.env.RECURSA_NODE_MODULES;
const {getLlama} = await import(modules ? pathToFileURL(join(modules, "node-llama-cpp/dist/index.js")).href
                                        : "node-llama-cpp");

const [modelPath, threadArg = "1", tokensArg = "128", sequencesArg = "8", promptArg = "512"] = process.argv.slice(2);
const threads = Number(threadArg), newTokens = Number(tokensArg);
const sequences = Number(sequencesArg), promptTokens = Number(promptArg);
const PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle.";

const llama = await getLlama({gpu: false, build: "never", maxThreads: threads, logLevel: "error"});
const model = await llama.loadModel({modelPath});
const prompt = model.tokenize(PROMPT);

async function decodeAll(context, count) {
    const generators = [];
    for (let i = 0; i < count; i++) {
        const generator = context.getSequence().evaluate(prompt, {temperature: 0, yieldEogToken: true});
        generators.push(generator);
    }
    await Promise.all(generators.map((g) => g.next()));   // prompt prefilled, first token out
    const started = performance.now();
    await Promise.all(generators.map(async (g) => {
        for (let k = 1; k < newTokens; k++) await g.next();
    }));
    const seconds = (performance.now() - started) / 1000;
    await Promise.all(generators.map((g) => g.return()));
    return {sequences: count, seconds, tokens_per_s: count * (newTokens - 1) / seconds};
}

async function prefill(context) {
    let tokens = [];
    while (tokens.length < promptTokens) tokens = tokens.concat(model.tokenize(" " + PROMPT));
    tokens = tokens.slice(0, promptTokens);
    const started = performance.now();
    await context.getSequence().evaluateWithoutGeneratingNewTokens(tokens);
    const seconds = (performance.now() - started) / 1000;
    return {tokens: promptTokens, seconds, tokens_per_s: promptTokens / seconds};
}

const contextOptions = {contextSize: 4096, threads: {ideal: threads, min: threads}};
const single = await model.createContext({...contextOptions, sequences: 1});
const batch1 = await decodeAll(single, 1);
const prefill512 = await prefill(await model.createContext({...contextOptions, sequences: 1}));
const parallel = await decodeAll(await model.createContext({...contextOptions, sequences}), sequences);
console.log(JSON.stringify({gguf: modelPath, threads, new_tokens: newTokens, batch1, parallel, prefill: prefill512,
                            binary: llama.buildType}));
process.exit(0);
