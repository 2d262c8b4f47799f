"""Write a GGUF whose quantised tensors are all re-quantised to one type (Q8_0 by default).

    python bench/gguf_requant.py SRC.gguf DST.gguf [--type Q8_0]

The embedded models ship as one mixed GGUF (Q4_K, Q5_0, Q6_K and Q8_0 tensors). Our int8 path reads every matrix
at 8 bits, so the fair llama.cpp comparison is the same model at 8 bits too: each quantised tensor is dequantised
with the `gguf` package and quantised again; float tensors (norms) and every metadata key are copied unchanged
except `general.file_type`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize, quantize

FILE_TYPES = {"Q8_0": LlamaFileType.MOSTLY_Q8_0, "F16": LlamaFileType.MOSTLY_F16}
FLOAT_TYPES = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}


def copy_metadata(reader: GGUFReader, writer: GGUFWriter, file_type: LlamaFileType) -> None:
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue   # the writer writes the header and the architecture itself
        if field.name == "general.file_type":
            writer.add_file_type(file_type)
            continue
        value_type = GGUFValueType(field.types[0])
        sub_type = GGUFValueType(field.types[-1]) if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)


def requantize(source: Path, target: Path, type_name: str) -> None:
    reader = GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    target_type = GGMLQuantizationType[type_name]
    writer = GGUFWriter(target, architecture)
    copy_metadata(reader, writer, FILE_TYPES[type_name])
    for tensor in reader.tensors:
        if tensor.tensor_type in FLOAT_TYPES:
            writer.add_tensor(tensor.name, np.array(tensor.data))
            continue
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, quantize(values, target_type), raw_dtype=target_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=True)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--type", default="Q8_0", choices=sorted(FILE_TYPES))
    args = parser.parse_args()
    if not args.source.is_file():
        parser.error(f"no such GGUF: {args.source}")
    requantize(args.source, args.target, args.type)
    print(f"wrote {args.target} ({args.target.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
