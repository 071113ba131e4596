// Chat templates written for sft, for models that ship none, selectable by name with
// `ChatTemplate.named(_:)`. They follow the published prompt formats of each family; every
// tag strips its surrounding whitespace, so only the quoted strings reach the output. Each
// starts with `bos_token`, as the models' own templates do (Llama-2, Mistral, Llama-3): the
// renderer passes "" for tokenizers that add no BOS (see PromptTokens), so one path serves both.
import SFTKernels

enum BuiltinTemplates {
    static let sources: [String: String] = [
        "chatml": """
        {{- bos_token }}
        {%- for message in messages %}
            {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\\n' }}
        {%- endif %}
        """,

        // Meta's Llama 2 chat format: the system prompt sits inside the first [INST] block.
        "llama-2": """
        {%- if messages and messages[0].role == 'system' %}
            {%- set system = messages[0].content %}
            {%- set turns = messages[1:] %}
        {%- else %}
            {%- set system = none %}
            {%- set turns = messages %}
        {%- endif %}
        {%- for message in turns %}
            {%- if (message.role == 'user') != (loop.index0 % 2 == 0) %}
                {{- raise_exception('llama-2: after an optional system message, roles must alternate user/assistant') }}
            {%- endif %}
            {%- if message.role == 'user' %}
                {{- bos_token + '[INST] ' }}
                {%- if loop.first and system is not none %}
                    {{- '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}
                {%- endif %}
                {{- message.content + ' [/INST]' }}
            {%- else %}
                {{- ' ' + message.content + ' ' + eos_token }}
            {%- endif %}
        {%- endfor %}
        """,

        "llama-3": """
        {{- bos_token }}
        {%- for message in messages %}
            {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content + '<|eot_id|>' }}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
        {%- endif %}
        """,

        // Mistral Instruct: [INST] blocks, no system role (a system message is prepended to the
        // first user message).
        "mistral": """
        {%- if messages and messages[0].role == 'system' %}
            {%- set system = messages[0].content + '\\n\\n' %}
            {%- set turns = messages[1:] %}
        {%- else %}
            {%- set system = '' %}
            {%- set turns = messages %}
        {%- endif %}
        {{- bos_token }}
        {%- for message in turns %}
            {%- if (message.role == 'user') != (loop.index0 % 2 == 0) %}
                {{- raise_exception('mistral: after an optional system message, roles must alternate user/assistant') }}
            {%- endif %}
            {%- if message.role == 'user' %}
                {{- '[INST] ' + (system if loop.first else '') + message.content + ' [/INST]' }}
            {%- else %}
                {{- message.content + eos_token }}
            {%- endif %}
        {%- endfor %}
        """,

        // Stanford Alpaca (tatsu-lab/stanford_alpaca, PROMPT_DICT): the preamble and the
        // `### Input:` section when the first user message carries an `input` field (instruction
        // records do), the response right after `### Response:`, EOS after it. Later turns
        // follow after a blank line.
        "alpaca": """
        {{- bos_token }}
        {%- if messages and messages[0].role == 'system' %}
            {{- messages[0].content + '\\n\\n' }}
            {%- set turns = messages[1:] %}
        {%- else %}
            {%- set turns = messages %}
            {%- if turns and turns[0].input is defined and turns[0].input %}
                {{- 'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\\n\\n' }}
            {%- else %}
                {{- 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\\n\\n' }}
            {%- endif %}
        {%- endif %}
        {%- for message in turns %}
            {%- if message.role == 'user' %}
                {%- if not loop.first %}{{- '\\n\\n' }}{%- endif %}
                {%- if message.input is defined and message.input %}
                    {{- '### Instruction:\\n' + message.instruction + '\\n\\n### Input:\\n' + message.input + '\\n\\n' }}
                {%- else %}
                    {{- '### Instruction:\\n' + message.content + '\\n\\n' }}
                {%- endif %}
            {%- elif message.role == 'assistant' %}
                {{- '### Response:' + message.content + eos_token }}
            {%- else %}
                {{- raise_exception('alpaca: unsupported role ' + message.role) }}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '### Response:' }}
        {%- endif %}
        """,

        // Vicuna v1.1.
        "vicuna": """
        {%- if messages and messages[0].role == 'system' %}
            {{- bos_token + messages[0].content + ' ' }}
            {%- set turns = messages[1:] %}
        {%- else %}
            {{- bos_token + "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. " }}
            {%- set turns = messages %}
        {%- endif %}
        {%- for message in turns %}
            {%- if message.role == 'user' %}
                {{- 'USER: ' + message.content + ' ' }}
            {%- elif message.role == 'assistant' %}
                {{- 'ASSISTANT: ' + message.content + eos_token }}
            {%- else %}
                {{- raise_exception('vicuna: unsupported role ' + message.role) }}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- 'ASSISTANT:' }}
        {%- endif %}
        """,

        // Guanaco (QLoRA paper): "### Human: ... ### Assistant: ...".
        "guanaco": """
        {{- bos_token }}
        {%- for message in messages %}
            {%- if not loop.first %}{{- ' ' }}{%- endif %}
            {%- if message.role == 'system' %}
                {{- message.content }}
            {%- elif message.role == 'user' %}
                {{- '### Human: ' + message.content }}
            {%- elif message.role == 'assistant' %}
                {{- '### Assistant: ' + message.content + eos_token }}
            {%- else %}
                {{- raise_exception('guanaco: unsupported role ' + message.role) }}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- (' ' if messages else '') + '### Assistant:' }}
        {%- endif %}
        """,
    ]
}
